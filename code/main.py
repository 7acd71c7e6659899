"""The training loop, top to bottom (the template's room: you should not need to edit it).

It calls your files for everything about the task (config.py, data.py, model.py, task.py) and
the template's machinery in gitexp/ for everything about recording it (statistic.json,
TensorBoard, checkpoints, every RNG, torchrun). Started by the Makefile, never by hand for a
recorded run:
    make run TAG=x [FIX=1]      # snapshot tag x's code into __result__/x/<id>/code and run it
    make continue TAG=x [ID=n]  # resume x/<n> from its last checkpoint
The launcher (scripts/experiment.py) runs this file from the project root with
GITEXP_DIR=__result__/x/<id>, whose statistic.json already holds the seed and FIX mode.
`python code/main.py` alone trains once with the fixed seed and records nothing.
"""
import errno
import os
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import config
import data
import task
from gitexp import datastore, dist, warmstart
from gitexp.batches import resume_at
from gitexp.stop import STOPPED, Stopped, StopRequest
from gitexp.checkpoint import rng_state, seed_everything, set_rng_state
from gitexp.record import ConfigError, Recorder, Refused, hparams, progress
from model import build_model, example_input

REFUSED = 3  # exit status meaning: bad input, nothing was changed (the launcher relies on it)


def check_config(cfg):
    """The values the loop itself reads, checked before training starts."""
    for name in ("epochs", "monitor", "monitor_mode", "keep_checkpoints"):
        if not hasattr(cfg, name):
            raise ConfigError(f"code/config.py has no `{name} = ...` line: the loop needs it (see README, Make it yours)")
    if cfg.monitor_mode not in ("min", "max"):
        raise ConfigError(f"monitor_mode = {cfg.monitor_mode!r} in code/config.py is neither 'min' nor 'max': "
                          "say whether a lower or a higher monitor is better")


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


def optimizers(cfg, model, steps_per_epoch):
    """task.configure_optimizers' answer as (optimizer, scheduler or None, "step" or "epoch")."""
    answer = task.configure_optimizers(cfg, model, steps_per_epoch)
    if not isinstance(answer, dict):
        answer = {"optimizer": answer}
    interval = answer.get("interval", "epoch")
    if interval not in ("step", "epoch"):
        raise ConfigError(f"configure_optimizers returned interval {interval!r}: use 'step' or 'epoch'")
    return answer["optimizer"], answer.get("scheduler"), interval


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


def train(exp_dir, rank, world_size, device):
    """The training loop. Records into `exp_dir` on rank 0; with exp_dir None, records nothing."""
    recorder = Recorder(exp_dir, rank, config)
    checkpoint = path = refusal = None
    skipped = []
    try:
        checkpoint, path, skipped = recorder.checkpoint_to_resume(model_fits)
    except Refused as problem:
        refusal = str(problem)
    seed, fix = recorder.seed_and_fix(int(Path(__file__).with_name("seed").read_text()))
    # every rank starts from rank 0's seed and checkpoint, or stops with it
    seed, fix, checkpoint, refusal = dist.broadcast((seed, fix, checkpoint, refusal))
    if checkpoint is not None and checkpoint.get("done") and len(checkpoint["rng"]) != world_size:
        refusal = (f"{path} was written inside an epoch by {len(checkpoint['rng'])} process(es), this continue has "
                   f"{world_size}: continue it as it ran (make continue without GPUS/NPROC/NNODES takes its own)")
    if refusal:
        raise Refused(refusal)
    check_config(config)
    data_dir, data_record = datastore.ensure(config, data)  # prepared once, then found again
    data_listing = datastore.listing_fingerprint(data_dir) if data_dir is not None and rank == 0 else None
    refusal = dist.broadcast(recorder.check_data(data_record))
    if refusal:
        raise Refused(refusal)
    source = None
    if checkpoint is None and rank == 0:  # a fresh start: from another experiment, if init_from says so
        try:
            source = warmstart.resolve(config, warmstart.expected())
        except Refused as problem:
            refusal = str(problem)
    source, refusal = dist.broadcast((source, refusal))
    if refusal:
        raise Refused(refusal)

    seed_everything(seed + rank, fix)  # dropout differs by rank; the data order does not
    generator = torch.Generator().manual_seed(seed)
    train_batches, eval_sets = data.make_loaders(config, data_dir, generator, seed, rank, world_size)
    model = build_model(config).to(device)
    optimizer, scheduler, interval = optimizers(config, model, len(train_batches))
    if source is not None:  # its weights now; with init_resume, its whole state just below
        checkpoint = warmstart.load(source, model, config)
    start_epoch, step, best, last, seconds = 0, 0, None, None, []
    done, sums, rng_at_checkpoint = 0, {}, None  # steps done in the epoch the run starts in
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch, step, best, last, seconds = (checkpoint[k] for k in ("epoch", "step", "best", "last", "seconds"))
        mine = rank % len(checkpoint["rng"])  # each rank its own generators
        done = checkpoint.get("done", 0)
        if done:  # inside an epoch: its start's RNG now, so its batches come in the same order
            sums = checkpoint["sums"][mine]
            rng_at_checkpoint = checkpoint["rng"][mine]
            set_rng_state(checkpoint["epoch_rng"][mine], generator)
        else:  # after building the model and optimizer, whose init drew from it
            set_rng_state(checkpoint["rng"][mine], generator)
    recorder.start(start_epoch, step, path, skipped, world_size, device, data_record,
                   progress(best, last, seconds) if checkpoint is not None else None, source)
    if source is not None and source["resume"] and checkpoint["hparams"].get("epochs") != config.epochs and rank == 0:
        print(f"note: {source['experiment']} ran with epochs = {checkpoint['hparams'].get('epochs')}, this run goes on "
              f"to epochs = {config.epochs}: a schedule computed from epochs (cosine to the end, say) now follows "
              "the new total from here on, so it differs from the source's")
    if start_epoch == 0 and done == 0:  # drawn once, by the run's first start
        recorder.graph(model, example_input().to(device))

    net = DistributedDataParallel(model) if world_size > 1 else model
    stop = StopRequest(exp_dir, world_size, device)
    checkpoint_every = getattr(config, "checkpoint_every", 0) or 0

    def state(position, **extra):
        """Everything a continue needs, taken now; rank 0 writes it (every rank takes part)."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": position[0], "done": position[1], "step": step, "best": best, "last": last,
                "seconds": seconds, "rng": dist.gather(rng_state(generator)), "hparams": hparams(config), **extra}

    # disable is left to tqdm's default where a bar is wanted, so TQDM_DISABLE=1 can still hide it
    bar = {} if rank == 0 else {"disable": True}
    loop_began = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        epoch_rng = rng_state(generator)  # what a checkpoint inside this epoch restores first
        dist.set_epoch(train_batches, epoch)
        net.train()
        batches = resume_at(train_batches, done)
        if rng_at_checkpoint is not None:  # the order is set; now the RNG as it was at the checkpoint
            set_rng_state(rng_at_checkpoint, generator)
            rng_at_checkpoint = None
        for batch in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", total=len(train_batches), initial=done,
                          mininterval=1.0,  # a redraw costs the loop; once a second is enough to watch
                          leave=False, file=sys.stderr, **bar):
            scalars = detached(task.train_step(net, batch, optimizer, device))
            if scheduler is not None and interval == "step":
                scheduler.step()
            step, done = step + 1, done + 1
            recorder.log_step(step, scalars)
            for name, value in scalars.items():
                sums[name] = sums.get(name, 0.0) + value
            stopping = stop.agreed()
            if done < len(train_batches) and (stopping or checkpoint_every and step % checkpoint_every == 0):
                recorder.save((epoch, done), state((epoch, done), epoch_rng=dist.gather(epoch_rng),
                                                   sums=dist.gather({k: float(v) for k, v in sums.items()})),
                              False, best, last, seconds)
                if stopping:
                    recorder.stop(epoch, done, step)
                    raise Stopped
        done = 0
        if scheduler is not None and interval == "epoch":
            scheduler.step()
        # the epoch's train metrics: each step scalar's mean over every rank's steps
        totals = dist.sum_over_ranks(list(sums.values()), device)
        results = {"train": {name: total / (len(train_batches) * world_size) for name, total in zip(sums, totals)}}
        sums = {}
        model.eval()  # the bare model: evaluation shards differ in length, and DDP must not sync here
        with torch.no_grad():
            for split, batches in eval_sets.items():
                results[split] = task.evaluate(model, batches, device)
        last = {"epoch": epoch + 1} | {f"{split}_{k}": v for split, r in results.items() for k, v in r.items()}
        seconds.append(round(time.perf_counter() - began, 3))
        if rank == 0:
            print(f"epoch {epoch + 1}/{config.epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch")
                  + f"  ({seconds[-1]:.1f}s)")
        is_best = improved(last, best, config)
        if is_best:
            best = last
        recorder.log_epoch(step, results)
        recorder.save((epoch + 1, 0), state((epoch + 1, 0)), is_best, best, last, seconds)
        if epoch + 1 < config.epochs and stop.agreed():  # asked during the last step or the evaluation
            recorder.stop(epoch + 1, 0, step)
            raise Stopped

    if rank == 0:
        recorder.data_at_end(datastore.at_end(config, data, data_dir, data_record, data_listing))
    recorder.finish(best, last, step)
    if rank == 0 and best is not None:
        monitor = config.monitor
        print(f"best epoch {best['epoch']}: {monitor} {best[monitor]:.4f}  |  last epoch {last['epoch']}: "
              f"{monitor} {last[monitor]:.4f}  |  trained in {time.perf_counter() - loop_began:.3f}s")


def check(mode, exp_dir):
    """The launcher's looks before it writes anything, in one process (a refusal under torchrun
    would come back as torchrun's failure): "check" before a continue with several processes;
    "check-init" before a run whose config has init_from."""
    if mode == "check":
        recorder = Recorder(Path(exp_dir), 0, config)
        recorder.checkpoint_to_resume(model_fits)
        refusal = recorder.check_data(datastore.existing(config, data))
        if refusal:
            raise Refused(refusal)
        return
    source = warmstart.resolve(config, warmstart.expected())
    if source is not None:
        warmstart.source_weights(source, build_model(config), config)
        if source["resume"] and getattr(config, "init_skip", None):
            raise Refused("init_resume = True takes the source's whole state: it cannot skip parameters (init_skip)")


def main():
    exp_dir = os.environ.get("GITEXP_DIR")
    if os.environ.get("GITEXP_MODE") in ("check", "check-init"):
        try:
            check(os.environ["GITEXP_MODE"], exp_dir)
        except Refused as problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(REFUSED)
        return
    rank, world_size, device = dist.setup()
    on_rank = f"rank {rank}: " if world_size > 1 else ""
    try:
        train(Path(exp_dir) if exp_dir else None, rank, world_size, device)
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
            os._exit(0)
    except Refused as problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(REFUSED)
    except Stopped:
        sys.exit(STOPPED)
    except ConfigError as problem:
        if rank == 0:  # every rank finds it; one line says it, in the log and the terminal
            print(f"error: {problem}", flush=True)
        sys.exit(1)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if rank == 0:
            print("stopped (Ctrl+C): make continue goes on from the last checkpoint", flush=True)
        sys.exit(130)
    except BaseException as error:
        # into stdout, so the error lands in the experiment's log; the launcher marks it failed
        # and repeats the `error:` line in the terminal, whichever rank printed it
        traceback.print_exc(file=sys.stdout)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            print(f"error: {on_rank}the disk is full ({error.filename or exp_dir}); every checkpoint already "
                  "written is whole: free some space, then make continue", flush=True)
        else:
            print(f"error: {on_rank}{one_line(error)}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
