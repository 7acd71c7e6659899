"""Train the example and record it as one experiment.

Started by the Makefile, never by hand for a recorded run:
    make run TAG=x [FIX=1]      # snapshot tag x's code into __result__/x/<id>/code and run it
    make continue TAG=x [ID=n]  # resume x/<n> from its last checkpoint
The launcher (scripts/experiment.py) runs this file from the project root with
GITEXP_DIR=__result__/x/<id>, whose statistic.json already holds the seed and FIX mode.
`python code/main.py` alone trains once with the fixed seed and records nothing.
"""
import copy
import errno
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

import config
from data import make_loaders
from epoch import evaluate, train_epoch
from model import build_model, example_input
from state import load_latest, rng_state, save_checkpoint, seed_everything, serialize, set_rng_state
from utils import dist
from utils.files import append_line_once, read_json, write_json

FINISHED_LIST = Path("__statistic__/exper-list/finished.txt")
REFUSED = 3  # exit status meaning: bad input, nothing was changed (the launcher relies on it)


class Refused(Exception):
    """A problem with the experiment's files that the user must fix; nothing was written."""


def hparams():
    """Every plain value in config.py."""
    plain = (bool, int, float, str, type(None), list, tuple)
    return {k: v for k, v in vars(config).items() if not k.startswith("_") and isinstance(v, plain)}


def now():
    return datetime.now().astimezone().isoformat(timespec="seconds")


def resume_state(exp_dir):
    """The checkpoint to continue from (None: start again from epoch 0), checked to fit the model."""
    checkpoint, path, skipped = load_latest(exp_dir / "checkpoint")
    if checkpoint is None:
        if skipped:
            raise Refused(f"no readable checkpoint in {exp_dir / 'checkpoint'}: every epoch_<n>.pth failed to load")
        return None, None, []
    try:
        build_model(config).load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[-1].strip()
        raise Refused(f"{path} was made by a different model ({first_line}); continue needs the model of its own tag")
    return checkpoint, path, skipped


def progress(best, last, seconds):
    """statistic.json's metrics (numbers only, equal for equal runs) and, apart, the timings."""
    return {"metrics": {"best": best, "last": last},
            "durations": {"epoch_seconds": seconds, "total_seconds": round(sum(seconds), 3)}}


def train(exp_dir, rank, world_size, device):
    """The training loop. Records into `exp_dir` on rank 0; with exp_dir None, records nothing."""
    record = exp_dir is not None and rank == 0
    statistic = read_json(exp_dir / "statistic.json") if record else None
    checkpoint = path = refusal = None
    skipped = []
    if record and os.environ.get("GITEXP_MODE") == "continue":
        try:
            checkpoint, path, skipped = resume_state(exp_dir)
        except Refused as problem:
            refusal = str(problem)
    if statistic:
        seed, fix = statistic["seed"], statistic["fix"]
    else:
        seed, fix = int(Path(__file__).with_name("seed").read_text()), True
    # every rank starts from rank 0's seed and checkpoint, or stops with it
    seed, fix, checkpoint, refusal = dist.broadcast((seed, fix, checkpoint, refusal))
    if refusal:
        raise Refused(refusal)

    seed_everything(seed + rank, fix)  # dropout differs by rank; the shuffling below does not
    generator = torch.Generator().manual_seed(seed)
    train_loader, val_loader, test_loader = make_loaders(config, generator, seed, rank, world_size)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)
    start_epoch, best, last, seconds = 0, None, None, []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_epoch, best, last, seconds = (checkpoint[k] for k in ("epoch", "best", "last", "seconds"))
        # after building the model, whose init drew from it; each rank its own generators
        set_rng_state(checkpoint["rng"][rank % len(checkpoint["rng"])], generator)

    writer = None
    continuing = os.environ.get("GITEXP_MODE") == "continue"
    if record:
        step = start_epoch * len(train_loader)
        if continuing:
            where = f"epoch {start_epoch} ({path})" if path else "epoch 0 (no checkpoint yet)"
            for bad, error in skipped:
                print(f"warning: {bad} is unreadable ({type(error).__name__}): using an older checkpoint")
            print(f"--- {now()}: continuing {statistic['tag']}/{statistic['id']} from {where}")
            for stale in [*exp_dir.glob(".*.tmp*"), *exp_dir.glob("checkpoint/.*.tmp*")]:
                stale.unlink()  # a temp file of a write that the interruption cut short
        statistic.update(status="running", hparams=hparams(), world_size=world_size, end=None)
        if checkpoint is not None:  # statistic.json may lag behind: a kill can fall between the two writes
            statistic.update(epoch=start_epoch, **progress(best, last, seconds))
        write_json(exp_dir / "statistic.json", statistic)
        # a new events file each start; purge_step hides what a killed run logged past the
        # checkpoint (steps above `step`). Every scalar is logged at the global step, so the
        # purge covers them all.
        writer = SummaryWriter(exp_dir / "tensorboard", purge_step=step + 1 if continuing else None)
        if start_epoch == 0:
            model.eval()  # trace without dropout, so the graph draws nothing from the RNG
            writer.add_graph(model, example_input().to(device))

    net = DistributedDataParallel(model) if world_size > 1 else model

    def log_step(loss):
        nonlocal step
        step += 1
        writer.add_scalar("train/loss_step", loss, step)

    # checkpoints and statistic.json are written on a second thread while training goes on;
    # the state itself is serialised on this one, so what is written is exactly this epoch's
    writer_thread, pending = ThreadPoolExecutor(max_workers=1), None
    loop_began = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        if world_size > 1:
            train_loader.sampler.set_epoch(epoch)
        lr = scheduler.get_last_lr()[0]
        result = {"train": train_epoch(net, train_loader, optimizer, device, log_step if record else None,
                                       progress=rank == 0, desc=f"epoch {epoch + 1}/{config.epochs}"),
                  # the bare model: evaluation shards differ in length, and DDP must not sync here
                  "val": evaluate(model, val_loader, device),
                  "test": evaluate(model, test_loader, device)}
        scheduler.step()
        last = {"epoch": epoch + 1} | {f"{split}_{k}": v for split, r in result.items() for k, v in r.items()}
        is_best = best is None or last["val_acc"] > best["val_acc"]
        if is_best:
            best = last
        seconds.append(round(time.perf_counter() - began, 3))
        if rank == 0:
            print(f"epoch {epoch + 1}/{config.epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch")
                  + f"  ({seconds[-1]:.1f}s)")
        rng = dist.gather(rng_state(generator))  # on every rank, before rank 0 saves
        if record:
            for split, r in result.items():
                for k, v in r.items():
                    writer.add_scalar(f"{split}/{k}", v, step)
            writer.add_scalar("train/lr", lr, step)
            data = serialize({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best, "last": last,
                "seconds": seconds, "rng": rng, "hparams": hparams(),
            })
            statistic.update(epoch=epoch + 1, **progress(best, last, list(seconds)))
            if pending is not None:
                pending.result()  # one write at a time, in order; its error surfaces here
            pending = writer_thread.submit(persist, exp_dir, epoch + 1, data, is_best, copy.deepcopy(statistic))

    if pending is not None:
        pending.result()  # finished means every checkpoint is on disk

    if record:
        finish(exp_dir, statistic, writer, best, last, step)
    if rank == 0 and best is not None:
        print(f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f}  test_acc {best['test_acc']:.4f}"
              f"  |  last epoch {last['epoch']}: test_acc {last['test_acc']:.4f}"
              f"  |  trained in {time.perf_counter() - loop_began:.3f}s")


def persist(exp_dir, epoch, data, is_best, statistic):
    """The checkpoint first, then statistic.json: it never claims an epoch not yet on disk."""
    save_checkpoint(exp_dir / "checkpoint", epoch, data, is_best, config.keep_checkpoints)
    write_json(exp_dir / "statistic.json", statistic)


def finish(exp_dir, statistic, writer, best, last, step):
    """Mark the experiment finished. finished.txt is written first and only once, so a kill
    between the two steps leaves an experiment that `make continue` finishes cleanly.

    The hparams and the best/last metrics go into the run's own events file, for TensorBoard's
    HParams tab. Not add_hparams: it opens a second writer (a second events file), and its
    experiment summary would make TensorBoard show only the hparams of whichever run it reads
    first; without one, TensorBoard builds the table from every run's hparams."""
    final = {f"{when}/{k}": v for when, m in (("best", best), ("last", last)) if m for k, v in m.items()}
    tb_hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams().items()}
    _, session_start, session_end = torch.utils.tensorboard.summary.hparams(tb_hparams, final)
    writer.file_writer.add_summary(session_start, step)
    for name, value in final.items():
        writer.add_scalar(name, value, step)
    writer.file_writer.add_summary(session_end, step)
    writer.close()
    append_line_once(FINISHED_LIST, f"{statistic['tag']}/{statistic['id']}")
    statistic.update(status="finished", end=now())
    write_json(exp_dir / "statistic.json", statistic)


def main():
    exp_dir = os.environ.get("GITEXP_DIR")
    if os.environ.get("GITEXP_MODE") == "check":
        # the launcher's look before a continue with several processes, whose refusal would
        # otherwise come back as torchrun's failure: one process, nothing written
        try:
            resume_state(Path(exp_dir))
        except Refused as problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(REFUSED)
        return
    rank, world_size, device = dist.setup()
    try:
        train(Path(exp_dir) if exp_dir else None, rank, world_size, device)
        # every rank waits for rank 0's final writes: a rank that tears the process group down
        # while another still uses it can abort ("terminate called without an active exception")
        dist.barrier()
        dist.teardown()  # only here: after an error, other ranks may be mid-collective, and
        # destroying the group would hang; exiting lets torchrun end them all
    except Refused as problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(REFUSED)
    except SystemExit:
        raise
    except BaseException as error:
        # into stdout, so the error lands in the experiment's log; the launcher marks it failed
        traceback.print_exc(file=sys.stdout)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            print(f"error: the disk is full ({error.filename or exp_dir}); every checkpoint already "
                  "written is whole: free some space, then make continue")
        sys.exit(1)


if __name__ == "__main__":
    main()
