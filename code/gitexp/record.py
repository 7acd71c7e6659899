"""What an experiment records (the template's machinery): statistic.json, TensorBoard events,
checkpoints and finished.txt, all in the folder the launcher gives (GITEXP_DIR).

Only global rank 0 of a recorded run records. Elsewhere (other ranks, `python code/main.py`
alone) a Recorder's methods do nothing, so the loop calls them the same way everywhere.
"""
import copy
import json
import os
import platform
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from gitexp.checkpoint import load_latest, on_cpu, save_checkpoint, serialize, snapshot, tensor_bytes
from gitexp.files import append_line_once, read_json, write_json

FINISHED_LIST = Path("__statistic__/exper-list/finished.txt")
# the best/last values feed TensorBoard's HParams tab as scalars; '~' sorts their cards after
# every curve on the Time Series page, which opens on the first cards
FINAL_PREFIX = "~"
STEP_FLUSH_SECONDS = 10
# The writer thread lets go of the interpreter's lock every few events it builds (some 0.1 ms):
# holding it for an epoch's worth of them kept the training thread waiting up to the 5 ms
# switch interval at every epoch's end; letting go after each one slows the writer itself.
EVENTS_BETWEEN_YIELDS = 8
# A checkpoint this small is serialised on the training thread, straight from the live state
# (some 0.3 ms a MB); a bigger one is copied first, then serialised on the writer thread, where
# torch.save holds the interpreter's lock in bursts that hold up every step: for a few MB that
# contention costs the training more than the serialising itself.
SERIALIZE_HERE_BYTES = 16 * 2**20


class Refused(Exception):
    """A problem with the experiment's files that the user must fix; nothing was written."""


class ConfigError(Exception):
    """A config value the run cannot work with: one line, and the run is marked failed."""


def hparams(cfg):
    """Every plain value in config.py."""
    plain = (bool, int, float, str, type(None), list, tuple)
    return {k: v for k, v in vars(cfg).items() if not k.startswith("_") and isinstance(v, plain)}


def now():
    return datetime.now().astimezone().isoformat(timespec="seconds")


def progress(best, last, seconds):
    """statistic.json's metrics (numbers only, equal for equal runs) and, apart, the timings."""
    return {"metrics": {"best": best, "last": last},
            "durations": {"epoch_seconds": seconds, "total_seconds": round(sum(seconds), 3)}}


def environment():
    """What the run ran on, beside its code and data: versions, GPUs, host."""
    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "host": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _scalar(tag, value):
    """A scalar summary with `tag` as it is (SummaryWriter would replace the '~')."""
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])


class Recorder:
    def __init__(self, exp_dir, rank, cfg):
        self.active = exp_dir is not None and rank == 0
        self.exp_dir, self.cfg = exp_dir, cfg
        self.mode = os.environ.get("GITEXP_MODE", "run")
        self.continuing = self.mode == "continue"
        self.statistic = read_json(exp_dir / "statistic.json") if self.active else None
        self.writer = None
        # checkpoints and statistic.json are written on a second thread while training goes on;
        # the state itself is copied on the training thread, so what is written is exactly it
        self.writer_thread = ThreadPoolExecutor(max_workers=1) if self.active else None
        self.pending = None  # the last checkpoint's write
        self.queued = []  # every write handed to the writer thread, done or not: its error surfaces
        self.steps, self.flushed = [], time.monotonic()  # step scalars not yet written

    def seed_and_fix(self, fallback_seed):
        """The run's seed and FIX mode, as the launcher recorded them (alone: the fixed seed)."""
        if self.statistic:
            return self.statistic["seed"], self.statistic["fix"]
        return fallback_seed, True

    def check_data(self, data_record):
        """A continue goes on with the data its run began with, or not at all."""
        recorded = (self.statistic or {}).get("data") if self.active and self.mode in ("continue", "check") else None
        if not recorded or data_record is None or recorded["fingerprint"] == data_record["fingerprint"]:
            return None
        name = f"{self.statistic['tag']}/{self.statistic['id']}"
        return (f"the data changed: {name} ran on data {recorded['fingerprint'][:12]}"
                f"{' (' + recorded['key'] + ')' if recorded.get('key') else ''}, the data here now is "
                f"{data_record['fingerprint'][:12]}: continue it only on its own data; "
                f"make rerun TAG={self.statistic['tag']} ID={self.statistic['id']} runs it again on this data")

    def checkpoint_to_resume(self, check_fits):
        """For a continue: (checkpoint, path, skipped) of the newest readable checkpoint, checked
        by `check_fits(checkpoint)`; (None, None, []) to start again from epoch 0."""
        if not (self.active and self.mode in ("continue", "check")):
            return None, None, []
        folder = self.exp_dir / "checkpoint"
        checkpoint, path, skipped = load_latest(folder)
        if checkpoint is None:
            if skipped:
                raise Refused(f"no readable checkpoint in {folder}: every epoch_<n>.pth failed to load")
            return None, None, []
        check_fits(checkpoint, path)
        return checkpoint, path, skipped

    def start(self, start_epoch, step, path, skipped, world_size, data_record, resumed_progress, source=None):
        """Mark the experiment running, open its events file; on a continue or a warm start,
        say from where."""
        if not self.active:
            return
        statistic = self.statistic
        if source is not None:
            statistic["init_from"] = source
            how = "its whole training state (init_resume)" if source["resume"] else "its weights"
            print(f"--- {now()}: starting from {source['experiment']}, epoch {source['epoch']}: {how}")
        if self.continuing:
            where = f"epoch {start_epoch} ({path})" if path else "epoch 0 (no checkpoint yet)"
            for bad, error in skipped:
                print(f"warning: {bad} is unreadable ({type(error).__name__}): using an older checkpoint")
            print(f"--- {now()}: continuing {statistic['tag']}/{statistic['id']} from {where}")
            for stale in [*self.exp_dir.glob(".*.tmp*"), *self.exp_dir.glob("checkpoint/.*.tmp*")]:
                stale.unlink()  # a temp file of a write that the interruption cut short
        statistic.update(status="running", hparams=hparams(self.cfg), world_size=world_size, end=None)
        if data_record is not None:
            statistic["data"] = {"key": data_record.get("key"), "fingerprint": data_record["fingerprint"]}
        statistic["environment"] = environment()
        if resumed_progress is not None:  # statistic.json may lag: a kill can fall between two writes
            statistic.update(epoch=start_epoch, **resumed_progress)
        write_json(self.exp_dir / "statistic.json", statistic)
        # a new events file each start; purge_step hides what a killed run logged past the
        # checkpoint (steps above `step`). Every scalar is logged at the global step, so the
        # purge covers them all.
        self.writer = SummaryWriter(self.exp_dir / "tensorboard", purge_step=step + 1 if self.continuing else None)
        self.writer.add_text("environment", f"`{json.dumps(statistic['environment'])}`", step)

    def graph(self, model, example_input):
        if self.active:
            model.eval()  # trace without dropout, so the graph draws nothing from the RNG
            self.writer.add_graph(model, example_input)

    def log_step(self, step, scalars):
        """The training step's scalars, each a curve step/<name> at the global step. They are
        kept and written together every STEP_FLUSH_SECONDS and with the epoch's checkpoint:
        written one by one, events cost a short step a tenth of its time."""
        if not self.active:
            return
        self.steps.append((step, "step/", scalars))
        if time.monotonic() - self.flushed > STEP_FLUSH_SECONDS:
            self.flush_steps()

    def log_epoch(self, step, results):
        """An epoch's metrics ({"val": {"loss": ...}}) as curves val/loss ..., at the global step;
        written with the checkpoint that follows (one wake of the writer thread an epoch)."""
        if self.active:
            self.steps.append((step, "", {f"{split}/{name}": float(value) for split, metrics in results.items()
                                          for name, value in metrics.items()}))

    def flush_steps(self):
        """Hand the kept scalars to the writer thread."""
        events = self.take_events()
        if events:
            self.submit(self._write_events, events)

    def take_events(self):
        """The kept scalars as [(step, [(tag, value)])], read from the device in one wait."""
        tensors = [value for _, _, scalars in self.steps for value in scalars.values() if torch.is_tensor(value)]
        if len({t.device for t in tensors}) > 1:
            tensors = [t.cpu() for t in tensors]
        read = iter(torch.stack(tensors).tolist() if tensors else [])  # one copy from the device
        events = [(step, [(prefix + name, next(read) if torch.is_tensor(value) else value)
                          for name, value in scalars.items()]) for step, prefix, scalars in self.steps]
        self.steps, self.flushed = [], time.monotonic()
        return events

    def _write_events(self, steps):
        """One event a step, for all of its scalars (on the writer thread: building and writing
        events costs the training thread nothing)."""
        for index, (step, values) in enumerate(steps):
            if index % EVENTS_BETWEEN_YIELDS == 0:
                time.sleep(0)  # the interpreter's lock, back to the training thread if it waits
            summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values])
            self.writer.file_writer.add_summary(summary, step)

    def submit(self, work, *args):
        """Run work(*args) on the writer thread, after everything handed to it before."""
        self.surface_errors()
        future = self.writer_thread.submit(work, *args)
        self.queued.append(future)
        return future

    def surface_errors(self):
        """Raise the error of a write that failed; forget the writes that are done."""
        for future in [f for f in self.queued if f.done()]:
            self.queued.remove(future)
            future.result()

    def save(self, position, state, is_best, best, last, seconds):
        """Write the checkpoint of `position` (epochs done, steps into the next), then
        statistic.json, on the writer thread. The curves up to its step reach the events file
        before it, so a continue from it neither loses nor repeats a point."""
        if not self.active:
            return
        if tensor_bytes(state) <= SERIALIZE_HERE_BYTES:
            data = serialize(on_cpu(state))  # its bytes now: nothing to copy first
        else:
            data = snapshot(state)  # a copy training can no longer change; the writer serialises it
        self.statistic.update(epoch=position[0], step=state["step"], **progress(best, last, list(seconds)))
        if self.pending is not None:  # at most one checkpoint waiting: a slow disk holds training up,
            self.pending.result()  # not memory
        self.pending = self.submit(self._persist, self.take_events(), position, data, is_best,
                                   copy.deepcopy(self.statistic))

    def _persist(self, events, position, data, is_best, statistic):
        """The events so far, then the checkpoint, then statistic.json: a checkpoint never
        lacks a curve's point before it, and statistic.json never claims an epoch not yet on
        disk."""
        self._write_events(events)
        self.writer.flush()
        data = data if isinstance(data, memoryview) else serialize(data)
        save_checkpoint(self.exp_dir / "checkpoint", position, data, is_best, self.cfg.keep_checkpoints)
        write_json(self.exp_dir / "statistic.json", statistic)

    def stop(self, epochs, done, step):
        """Stopped on request, its checkpoint written: continuable."""
        if not self.active:
            return
        self.flush_steps()
        self.wait()
        self.writer.close()
        self.statistic.update(status="stopped", end=now())
        write_json(self.exp_dir / "statistic.json", self.statistic)
        name = f"{self.statistic['tag']}/{self.statistic['id']}"
        print(f"stopped after epoch {epochs} and {done} step(s) more (step {step}): "
              f"make continue TAG={self.statistic['tag']} ID={self.statistic['id']} goes on from there ({name})")

    def wait(self):
        """Until every write handed to the writer thread is done; the first error surfaces."""
        for future in self.queued:
            future.result()
        self.queued = []

    def finish(self, best, last, step):
        """Mark the experiment finished. finished.txt is written first and only once, so a kill
        between the two steps leaves an experiment that `make continue` finishes cleanly.

        The hparams and the best/last metrics go into the run's own events file, for
        TensorBoard's HParams tab. Not add_hparams: it opens a second writer (a second events
        file), and its experiment summary would make TensorBoard show only the hparams of
        whichever run it reads first; without one, TensorBoard builds the table from every
        run's hparams."""
        if not self.active:
            return
        self.flush_steps()
        final = {f"{FINAL_PREFIX}{when}/{k}": v for when, m in (("best", best), ("last", last)) if m for k, v in m.items()}
        tb_hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams(self.cfg).items()}
        _, session_start, session_end = torch.utils.tensorboard.summary.hparams(tb_hparams, final)  # while it writes
        self.wait()  # finished means every checkpoint is on disk
        self.writer.file_writer.add_summary(session_start, step)
        for name, value in final.items():
            self.writer.file_writer.add_summary(_scalar(name, value), step)
        self.writer.file_writer.add_summary(session_end, step)
        self.writer.close()
        statistic = self.statistic
        append_line_once(FINISHED_LIST, f"{statistic['tag']}/{statistic['id']}")
        statistic.update(status="finished", end=now())
        write_json(self.exp_dir / "statistic.json", statistic)
