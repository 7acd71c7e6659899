"""The training loop, top to bottom (the template's room: you should not need to edit it).

It calls your files for everything about the task (config.py, data.py, model.py, task.py) and
the template's machinery in gitexp/ for everything about recording it (statistic.json,
TensorBoard, checkpoints, every RNG, torchrun). Started by the Makefile, never by hand for a
recorded run:
    make run TAG=x [FIX=1]      # snapshot tag x's code into __result__/x/<id>/code and run it
    make continue TAG=x [ID=n]  # resume x/<n> from its last checkpoint
    make check [NPROC=2]        # prove this task's contract and exact resume, recording nothing
The launcher (scripts/experiment.py) runs this file from the project root with
the experiment folder __result__/x/<id> (gitexp/protocol.py), whose statistic.json already holds
the seed and FIX mode.
`python code/main.py` alone trains once with the fixed seed and records nothing.
"""
import errno
import os
import sys
import time
import traceback
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import config
import data
import task
from gitexp import contract, datastore, dist, protocol, resume, warmstart
from gitexp.batches import endless, resume_at
from gitexp.checkpoint import seed_everything
from gitexp.resume import Position, Start, Stateful
from gitexp.stop import Stopped, StopRequest, held, quiet_workers
from gitexp.protocol import ConfigError, Refused
from gitexp.record import Recorder, hparams, progress
import model as model_file
from model import build_model

def new_model(facts):
    """build_model(config, facts) where it takes the data's facts (data.py's facts()), else build_model(config)."""
    return build_model(config, facts) if contract.takes_facts(build_model) else build_model(config)


def model_fits(checkpoint, path, facts):
    try:
        new_model(facts).load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[-1].strip()
        raise Refused(f"{path} was made by a different model ({first_line}); continue needs the model of its own tag")


def detached(scalars):
    """The training step's scalars as float64 0-dim tensors (left on their device: reading them
    would wait for the GPU at every step) or floats."""
    return {name: value.detach().reshape(()).to(torch.float64) if torch.is_tensor(value) else float(value)
            for name, value in scalars.items()}


def one_line(error):
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def set_up(exp_dir, rank, world_size, device, mode):
    """Everything the loop needs, built, seeded and (on a continue or a warm start) restored:
    the run's pieces as one namespace."""
    recorder = Recorder(exp_dir, rank, config, mode)
    # the checkpoint, seed, data and warm start every rank agrees on, or the refusal they all stop with
    start = Start(recorder, config, data, model_fits, Path(__file__).with_name("seed"), world_size)
    seed_everything(start.seed + rank, start.fix)  # dropout differs by rank; the data order does not
    generator = torch.Generator().manual_seed(start.seed)
    train_batches, eval_sets = data.make_loaders(config, start.data_dir, generator, start.seed, rank, world_size)
    for loader in [train_batches, *(eval_sets.values() if isinstance(eval_sets, dict) else [])]:
        quiet_workers(loader)
    model = new_model(start.facts).to(device)
    max_steps = getattr(config, "max_steps", None)  # a run counted in steps: one span over a stream of batches
    optimizer, schedules, extra, rank_extra = contract.optimizers(
        task.configure_optimizers(config, model, max_steps or len(train_batches)))
    # several optimizers: the step calls the networks itself (model.G, model.D), which DDP's
    # wrapper would not see; each optimizer averages its gradients over the ranks instead
    averaged = world_size > 1 and isinstance(optimizer, dict)
    if averaged:
        for one in optimizer.values():
            dist.average_gradients_before_step(one)
    if extra or rank_extra:
        contract.check_takes_state([task.train_step, task.evaluate, getattr(task, "after_evaluation", None)])
    states = Stateful(model, optimizer, schedules, extra, rank_extra, rank)
    position = Position(generator, rank)
    checkpoint = start.checkpoint
    if start.source is not None:  # its weights now; with init_resume, its whole state just below
        checkpoint = warmstart.load(start.source, model, config)
    if checkpoint is not None:
        states.load_state_dict(checkpoint)
        position.load_state_dict(checkpoint)  # after the model and optimizer, whose init drew from the RNG
    if averaged:
        dist.broadcast_model(model)  # rank 0's start on every rank, as DDP's wrapper does
    epoch_steps, eval_every = spans(max_steps, train_batches)
    recorder.start((position.epoch, position.done, epoch_steps), position.step, start.path, start.skipped,
                   world_size, device, start.data_record and dict(start.data_record, facts=start.facts),
                   progress(position.best, position.last, position.seconds) if checkpoint is not None else None,
                   start.source)
    warmstart.note_epochs(start.source, checkpoint, config, rank)
    if position.step == 0 and hasattr(model_file, "example_input"):  # drawn once, by the run's first start
        recorder.graph(model, lambda: contract.on_device(model_file.example_input(), device))
    return SimpleNamespace(
        recorder=recorder, start=start, train_batches=train_batches, eval_sets=contract.eval_sets(eval_sets),
        model=model, net=DistributedDataParallel(model) if world_size > 1 and not averaged else model,
        optimizer=optimizer,
        schedules=schedules, states=states, position=position, epoch_steps=epoch_steps, max_steps=max_steps,
        epochs=1 if max_steps else config.epochs,
        broadcast_buffers=averaged,
        with_state={"state": extra | rank_extra} if extra or rank_extra else {},  # declared: passed on
        stop=StopRequest(exp_dir, world_size, device), rank=rank, world_size=world_size, device=device,
        eval_every=eval_every, checkpoint_every=getattr(config, "checkpoint_every", 0) or 0)


def spans(max_steps, train_batches):
    """(the steps of an epoch, or of the whole run where it is counted in steps; eval_every).
    make check cuts epochs, or a stream's evaluations, to a few steps apart."""
    epoch_steps, eval_every, cut = max_steps or len(train_batches), getattr(config, "eval_every", 0) or 0, \
        protocol.check_epoch()
    if cut is not None and max_steps:
        eval_every = min(eval_every or cut, cut)
    elif cut is not None:
        epoch_steps = min(epoch_steps, cut)
    return epoch_steps, eval_every


def evaluation(run, began=None):
    """The metrics now (the step scalars' means since the last evaluation, each evaluation
    set's), logged; whether they are the best so far. At an epoch's end (`began`: its start)
    the epoch's duration too."""
    position = run.position
    results = {"train": position.train_means(run.world_size, run.device)}
    run.model.eval()  # the bare model: evaluation shards differ in length, and DDP must not sync here
    shown = {}  # the media.Image and media.Text evaluate returned, by <set>_<name>
    with torch.no_grad(), held():  # evaluation loaders' workers start in evaluate: signals are the loop's
        for split, batches in run.eval_sets.items():
            told, made = contract.keywords(task.evaluate, split=split, step=position.step), {}
            results[split] = contract.floats(task.evaluate(run.model, batches, run.device, **run.with_state, **told),
                                             f"evaluate ({split})", made)
            shown |= {f"{split}_{name}": medium for name, medium in made.items()}
    run.net.train()
    at = {"step": position.step} if run.max_steps else \
        {"epoch": position.epoch + 1} | ({"step": position.step} if run.eval_every else {})
    position.last = at | {f"{split}_{k}": v for split, r in results.items() for k, v in r.items()}
    if began is not None:
        position.seconds.append(round(time.perf_counter() - began, 3))
    if run.rank == 0:  # "epoch <n>/<epochs>" once an epoch, at its end; "step <n>/<max_steps>"
        where = f"step {position.step}/{run.max_steps}" if run.max_steps else \
            f"epoch {position.epoch + 1}/{config.epochs}" if began is not None else \
            f"step {position.step} in epoch {position.epoch + 1}"
        print(where + (f" (step {position.step})" if run.eval_every and began is not None and not run.max_steps
                       else "") + "  "
              + "  ".join(f"{k} {v:.4f}" for k, v in position.last.items() if k not in at)
              + (f"  ({position.seconds[-1]:.1f}s)" if began is not None else ""))
    run.recorder.log_epoch(position.step, results)
    run.recorder.log_media(position.step, shown)
    is_best = position.judge(config)
    after_evaluation(run, at_epoch_end=began is not None)
    if began is not None and position.epoch + 1 >= run.epochs:
        position.early_stop = None  # the last evaluation ends the run anyway: nothing stopped early
    return is_best


def after_evaluation(run, at_epoch_end):
    """What the metrics drive, on every rank before the checkpoint: the task's
    after_evaluation (annealing, its own stopping rule), then the schedules that monitor a
    metric (ReduceLROnPlateau): "epoch" ones after every frequency-th epoch's end, "step" ones
    after every frequency-th evaluation."""
    position = run.position
    if hasattr(task, "after_evaluation"):
        reason = task.after_evaluation(dict(position.last), run.optimizer, **run.with_state)
        if reason is not None and not isinstance(reason, str):
            raise ConfigError(f"after_evaluation returned {type(reason).__name__}: return None to go on, or a str "
                              "saying why the run stops early")
        if reason and position.early_stop is None:
            position.stop_early(reason)
    for schedule in run.schedules:
        if schedule.monitor is None:
            continue
        count = position.epoch + 1 if schedule.interval == "epoch" else position.evaluations
        if (at_epoch_end or schedule.interval == "step") and count % schedule.frequency == 0:
            if schedule.monitor not in position.last:
                there = ", ".join(name for name in position.last if name not in ("epoch", "step"))
                raise ConfigError(f"configure_optimizers' schedule monitors {schedule.monitor!r}, not a metric (there "
                                  f"are: {there}): return one of them as its 'monitor'")
            schedule.step(position.last)


def save(run, is_best=False):
    """Everything a continue needs, taken now; rank 0 writes it (every rank takes part)."""
    position = run.position
    state = run.states.state_dict() | position.state_dict() | {"hparams": hparams(config)}
    run.recorder.save((position.epoch, position.done), state, is_best, position.best, position.last, position.seconds,
                      final=position.early_stop is not None)


def due(every, step):
    return every and step % every == 0


def step_schedules(schedules, interval, count):
    """The schedules without a monitor that step at this interval, at every frequency-th one."""
    for schedule in schedules:
        if schedule.monitor is None and schedule.interval == interval and count % schedule.frequency == 0:
            schedule.step()


def train(exp_dir, rank, world_size, device, mode=protocol.RUN):
    """The training loop. Records into `exp_dir` on rank 0; with exp_dir None, records nothing."""
    run = set_up(exp_dir, rank, world_size, device, mode)
    position, recorder = run.position, run.recorder
    # disable is left to tqdm's default where a bar is wanted, so TQDM_DISABLE=1 can still hide it
    bar = {} if rank == 0 else {"disable": True}
    loop_began = time.perf_counter()
    for epoch in range(position.epoch, run.epochs):
        if position.early_stop is not None:  # a continue from the checkpoint the early stop wrote
            break
        began = time.perf_counter()
        position.begin_epoch()
        dist.set_epoch(run.train_batches, epoch)
        run.net.train()
        if run.max_steps:  # a stream: drawn on from the checkpoint's RNG, nothing to skip
            position.order_drawn()
            batches = islice(endless(run.train_batches), run.epoch_steps - position.done)
        else:
            with held():  # a DataLoader's workers start here: the stop signals are the loop's alone
                batches = islice(resume_at(run.train_batches, position.done), run.epoch_steps - position.done)
            position.order_drawn()
        for batch in tqdm(batches, desc="steps" if run.max_steps else f"epoch {epoch + 1}/{config.epochs}",
                          total=run.epoch_steps,
                          initial=position.done, mininterval=1.0,  # a redraw costs the loop; once a second will do
                          leave=False, file=sys.stderr, **bar):
            scalars = detached(task.train_step(run.net, batch, run.optimizer, device, **run.with_state))
            if run.broadcast_buffers:
                dist.broadcast_buffers(run.model)  # as DDP's wrapper would at the next forward
            position.add(scalars)
            step_schedules(run.schedules, "step", position.step)
            recorder.log_step(position.step, scalars)
            stopping = run.stop.agreed(position.step)
            if position.done < run.epoch_steps and (
                    stopping or due(run.checkpoint_every, position.step) or due(run.eval_every, position.step)):
                save(run, evaluation(run) if due(run.eval_every, position.step) else False)
                if stopping:
                    recorder.stop(epoch, position.done, position.step)
                    raise Stopped
                if position.early_stop is not None:
                    break
        if position.early_stop is not None:
            break  # inside the epoch, at an eval_every evaluation
        step_schedules(run.schedules, "epoch", epoch + 1)
        is_best = evaluation(run, began)
        position.epoch, position.done = epoch + 1, 0
        save(run, is_best)
        if position.early_stop is None and epoch + 1 < run.epochs and run.stop.agreed():
            recorder.stop(epoch + 1, 0, position.step)  # asked during the last step or the evaluation
            raise Stopped
    finish(run, loop_began)


def when(metrics):
    """Where an evaluation's metrics were taken, in words: "epoch 3", or "step 500" in a run counted in steps."""
    return f"epoch {metrics['epoch']}" if "epoch" in metrics else f"step {metrics['step']}"


def finish(run, loop_began):
    """The data's fingerprint again, the run marked finished, its best and last epoch said."""
    position, start = run.position, run.start
    if run.rank == 0:
        run.recorder.data_at_end(datastore.at_end(config, data, start.data_dir, start.data_record, start.data_listing))
    run.recorder.finish(position.best, position.last, position.step, position.early_stop)
    best, last, monitor = position.best, position.last, config.monitor
    if run.rank == 0 and position.early_stop is not None:
        print(f"stopped early at step {position.early_stop['step']} (epoch {position.early_stop['epoch']}): "
              f"{position.early_stop['reason']}")
    if run.rank == 0 and best is not None:
        said = f"best {when(best)}: {monitor} {best[monitor]:.4f}  |  " if monitor else ""
        print(f"{said}last {when(last)}" + (f": {monitor} {last[monitor]:.4f}" if monitor else "")
              + f"  |  trained in {time.perf_counter() - loop_began:.3f}s")


def facts_found(record):
    """The data's facts where the data is there to read them; None where the run prepares it first
    (and looks then)."""
    folder = datastore.folder_of(record)
    if folder is None and hasattr(data, "prepare"):
        return None
    return datastore.facts(config, data, folder)


def check(mode, exp_dir):
    """The launcher's looks before it writes anything, in one process (a refusal under torchrun
    would come back as torchrun's failure): CHECK_RESUME before a continue with several
    processes; CHECK_INIT before a run whose config has init_from."""
    if mode == protocol.CHECK_RESUME:
        recorder = Recorder(exp_dir, 0, config, mode)
        existing = datastore.existing(config, data)
        refusal = resume.data_refusal(recorder, existing)
        if refusal:
            raise Refused(refusal)
        checkpoint, path, _ = resume.checkpoint_to_resume(recorder)
        facts = facts_found(existing)
        if checkpoint is not None and facts is not None:
            model_fits(checkpoint, path, facts)
        return
    source = warmstart.resolve(config, warmstart.expected())
    if source is not None:
        facts = facts_found(datastore.existing(config, data))
        if facts is not None:
            warmstart.source_weights(source, new_model(facts), config)
        if source["resume"] and getattr(config, "init_skip", None):
            raise Refused("init_resume = True takes the source's whole state: it cannot skip parameters (init_skip)")


def report_error(exp_dir, message, stream=None):
    """The one `error:` line: printed (stdout by default, so it lands in the log too), and
    recorded for the launcher to repeat (protocol.ERROR: the first rank's wins)."""
    print(f"error: {message}", file=stream or sys.stdout, flush=True)
    protocol.record_error(exp_dir, message)


def main():
    exp_dir, mode = protocol.folder(), protocol.mode()
    if mode in (protocol.CHECK_RESUME, protocol.CHECK_INIT):
        try:
            check(mode, exp_dir)
        except Refused as problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(protocol.REFUSED)
        return
    rank, world_size, device = dist.setup()
    on_rank = f"rank {rank}: " if world_size > 1 else ""
    try:
        train(exp_dir, rank, world_size, device, mode)
        # every rank waits for rank 0's final writes: a rank that tears the process group down
        # while another still uses it can abort ("terminate called without an active exception")
        dist.barrier()
        dist.teardown()  # only here: after an error, other ranks may be mid-collective, and
        # destroying the group would hang; exiting lets torchrun end them all
        if world_size > 1:
            # everything is written and the group is gone; at interpreter exit gloo's threads can
            # still abort the process ("terminate called without an active exception"), failing
            # a finished run: leave without running the C++ destructors
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(protocol.DONE)
    except Refused as problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(protocol.REFUSED)
    except Stopped:
        sys.exit(protocol.STOPPED)
    except ConfigError as problem:
        if rank == 0:  # every rank finds it; one line says it, in the log and the terminal
            report_error(exp_dir, str(problem))
        sys.exit(protocol.FAILED)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if rank == 0:
            print("stopped (Ctrl+C): make continue goes on from the last checkpoint", flush=True)
        sys.exit(protocol.INTERRUPTED)
    except BaseException as error:
        # into stdout, so the error lands in the experiment's log; the launcher marks it failed
        # and repeats the `error:` line in the terminal, whichever rank printed it
        traceback.print_exc(file=sys.stdout)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            report_error(exp_dir, f"{on_rank}the disk is full ({error.filename or exp_dir}); every checkpoint "
                         "already written is whole: free some space, then make continue")
        else:
            report_error(exp_dir, f"{on_rank}{one_line(error)}")
        sys.exit(protocol.FAILED)


if __name__ == "__main__":
    main()
