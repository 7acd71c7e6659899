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
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import config
import data
import task
from gitexp import contract, datastore, dist, protocol, resume, warmstart
from gitexp.batches import resume_at
from gitexp.checkpoint import seed_everything
from gitexp.resume import Position, Start, Stateful
from gitexp.stop import Stopped, StopRequest
from gitexp.protocol import ConfigError, Refused
from gitexp.record import Recorder, hparams, progress
import model as model_file
from model import build_model

def improved(last, best, cfg):
    """Whether this epoch is the best so far by cfg.monitor, lower or higher as cfg.monitor_mode says."""
    if cfg.monitor not in last:
        there = ", ".join(name for name in last if name != "epoch")
        raise ConfigError(f"monitor = {cfg.monitor!r} is not a metric of epoch {last['epoch']} "
                          f"(there are: {there}): set monitor in code/config.py to one of them")
    if best is None:
        return True
    if cfg.monitor_mode == "max":
        return last[cfg.monitor] > best[cfg.monitor]
    return last[cfg.monitor] < best[cfg.monitor]


def model_fits(checkpoint, path):
    try:
        build_model(config).load_state_dict(checkpoint["model"])
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
    model = build_model(config).to(device)
    optimizer, scheduler, interval, extra, rank_extra = contract.optimizers(
        task.configure_optimizers(config, model, len(train_batches)))
    states = Stateful(model, optimizer, scheduler, extra, rank_extra, rank)
    position = Position(generator, rank)
    checkpoint = start.checkpoint
    if start.source is not None:  # its weights now; with init_resume, its whole state just below
        checkpoint = warmstart.load(start.source, model, config)
    if checkpoint is not None:
        states.load_state_dict(checkpoint)
        position.load_state_dict(checkpoint)  # after the model and optimizer, whose init drew from the RNG
    recorder.start((position.epoch, position.done, len(train_batches)), position.step, start.path, start.skipped,
                   world_size, device, start.data_record, progress(position.best, position.last, position.seconds)
                   if checkpoint is not None else None, start.source)
    warmstart.note_epochs(start.source, checkpoint, config, rank)
    if position.step == 0 and hasattr(model_file, "example_input"):  # drawn once, by the run's first start
        recorder.graph(model, lambda: contract.on_device(model_file.example_input(), device))
    return SimpleNamespace(
        recorder=recorder, start=start, train_batches=train_batches, eval_sets=contract.eval_sets(eval_sets),
        model=model, net=DistributedDataParallel(model) if world_size > 1 else model, optimizer=optimizer,
        scheduler=scheduler, interval=interval, states=states, position=position,
        with_state={"state": extra | rank_extra} if extra or rank_extra else {},  # declared: passed on
        stop=StopRequest(exp_dir, world_size, device), rank=rank, world_size=world_size, device=device,
        eval_every=getattr(config, "eval_every", 0) or 0, checkpoint_every=getattr(config, "checkpoint_every", 0) or 0)


def evaluation(run, began=None):
    """The metrics now (the step scalars' means since the last evaluation, each evaluation
    set's), logged; whether they are the best so far. At an epoch's end (`began`: its start)
    the epoch's duration too."""
    position = run.position
    results = {"train": position.train_means(run.world_size, run.device)}
    run.model.eval()  # the bare model: evaluation shards differ in length, and DDP must not sync here
    with torch.no_grad():
        for split, batches in run.eval_sets.items():
            results[split] = contract.floats(task.evaluate(run.model, batches, run.device, **run.with_state), "evaluate")
    run.net.train()
    at = {"epoch": position.epoch + 1} | ({"step": position.step} if run.eval_every else {})
    position.last = at | {f"{split}_{k}": v for split, r in results.items() for k, v in r.items()}
    if began is not None:
        position.seconds.append(round(time.perf_counter() - began, 3))
    if run.rank == 0:  # "epoch <n>/<epochs>" once an epoch, at its end
        where = f"epoch {position.epoch + 1}/{config.epochs}" if began is not None else \
            f"step {position.step} in epoch {position.epoch + 1}"
        print(where + (f" (step {position.step})" if run.eval_every and began is not None else "") + "  "
              + "  ".join(f"{k} {v:.4f}" for k, v in position.last.items() if k not in at)
              + (f"  ({position.seconds[-1]:.1f}s)" if began is not None else ""))
    run.recorder.log_epoch(position.step, results)
    if improved(position.last, position.best, config):
        position.best = position.last
        return True
    return False


def save(run, is_best=False):
    """Everything a continue needs, taken now; rank 0 writes it (every rank takes part)."""
    position = run.position
    state = run.states.state_dict() | position.state_dict() | {"hparams": hparams(config)}
    run.recorder.save((position.epoch, position.done), state, is_best, position.best, position.last, position.seconds)


def due(every, step):
    return every and step % every == 0


def train(exp_dir, rank, world_size, device, mode=protocol.RUN):
    """The training loop. Records into `exp_dir` on rank 0; with exp_dir None, records nothing."""
    run = set_up(exp_dir, rank, world_size, device, mode)
    position, recorder, scheduler = run.position, run.recorder, run.scheduler
    # disable is left to tqdm's default where a bar is wanted, so TQDM_DISABLE=1 can still hide it
    bar = {} if rank == 0 else {"disable": True}
    loop_began = time.perf_counter()
    for epoch in range(position.epoch, config.epochs):
        began = time.perf_counter()
        position.begin_epoch()
        dist.set_epoch(run.train_batches, epoch)
        run.net.train()
        batches = resume_at(run.train_batches, position.done)
        position.order_drawn()
        for batch in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", total=len(run.train_batches),
                          initial=position.done, mininterval=1.0,  # a redraw costs the loop; once a second will do
                          leave=False, file=sys.stderr, **bar):
            scalars = detached(task.train_step(run.net, batch, run.optimizer, device, **run.with_state))
            if scheduler is not None and run.interval == "step":
                scheduler.step()
            position.add(scalars)
            recorder.log_step(position.step, scalars)
            stopping = run.stop.agreed(position.step)
            if position.done < len(run.train_batches) and (
                    stopping or due(run.checkpoint_every, position.step) or due(run.eval_every, position.step)):
                save(run, evaluation(run) if due(run.eval_every, position.step) else False)
                if stopping:
                    recorder.stop(epoch, position.done, position.step)
                    raise Stopped
        if scheduler is not None and run.interval == "epoch":
            scheduler.step()
        is_best = evaluation(run, began)
        position.epoch, position.done = epoch + 1, 0
        save(run, is_best)
        if epoch + 1 < config.epochs and run.stop.agreed():  # asked during the last step or the evaluation
            recorder.stop(epoch + 1, 0, position.step)
            raise Stopped
    finish(run, loop_began)


def finish(run, loop_began):
    """The data's fingerprint again, the run marked finished, its best and last epoch said."""
    position, start = run.position, run.start
    if run.rank == 0:
        run.recorder.data_at_end(datastore.at_end(config, data, start.data_dir, start.data_record, start.data_listing))
    run.recorder.finish(position.best, position.last, position.step)
    best, last = position.best, position.last
    if run.rank == 0 and best is not None:
        monitor = config.monitor
        print(f"best epoch {best['epoch']}: {monitor} {best[monitor]:.4f}  |  last epoch {last['epoch']}: "
              f"{monitor} {last[monitor]:.4f}  |  trained in {time.perf_counter() - loop_began:.3f}s")


def check(mode, exp_dir):
    """The launcher's looks before it writes anything, in one process (a refusal under torchrun
    would come back as torchrun's failure): CHECK_RESUME before a continue with several
    processes; CHECK_INIT before a run whose config has init_from."""
    if mode == protocol.CHECK_RESUME:
        recorder = Recorder(exp_dir, 0, config, mode)
        resume.checkpoint_to_resume(recorder, model_fits)
        refusal = resume.data_refusal(recorder, datastore.existing(config, data))
        if refusal:
            raise Refused(refusal)
        return
    source = warmstart.resolve(config, warmstart.expected())
    if source is not None:
        warmstart.source_weights(source, build_model(config), config)
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
