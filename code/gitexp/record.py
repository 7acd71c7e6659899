"""What an experiment records (the template's machinery): statistic.json, TensorBoard events,
checkpoints and finished.txt, all in the folder the launcher gives (protocol.folder()).

Where the time goes: the training thread copies each checkpoint's state (to the CPU, where
training can no longer change it) and goes on; a second thread serialises it, writes it,
waits for the disk (fsync) and renames it into place, then statistic.json. For a checkpoint
of 100 MB that is some 20-30 ms on the training thread against 140-360 ms written there
(make bench's "checkpoint" row): 5 to 15% of a 2 s epoch.

Only global rank 0 of a recorded run records. Elsewhere (other ranks, `python code/main.py`
alone) a Recorder's methods do nothing, so the loop calls them the same way everywhere.
"""
import json
import os
import platform
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import torch
from google.protobuf.struct_pb2 import Value
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams.api_pb2 import STATUS_SUCCESS
from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo, SessionStartInfo
from torch.utils.tensorboard import _pytorch_graph  # what SummaryWriter.add_graph draws with
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard.summary import text as text_summary

from gitexp import protocol
from gitexp.checkpoint import checkpoint_path, save_checkpoint, serialize, snapshot
from gitexp.events import EventFile, drop_past, hparams_summary, tensorboard_hparams
from gitexp.files import append_line_once, atomic_write, discard, json_bytes, publish, read_json, stage, write_json
from gitexp.layout import FINISHED_LIST, MEDIA, STATISTIC

# the best/last values feed TensorBoard's HParams tab as scalars; '~' sorts their cards after
# every curve on the Time Series page, which opens on the first cards
FINAL_PREFIX = "~"
STEP_FLUSH_SECONDS = 10


def hparams(cfg):
    """Every plain value in config.py."""
    plain = (bool, int, float, str, type(None), list, tuple)
    return {k: v for k, v in vars(cfg).items() if not k.startswith("_") and isinstance(v, plain)}


def now():
    return datetime.now().astimezone().isoformat(timespec="seconds")


def last_fingerprint(data):
    """The data fingerprint a run last ran on: its first, or the last one ACCEPT_DATA=1 let a
    continue go on over."""
    return (data.get("accepted") or [{}])[-1].get("fingerprint", data["fingerprint"])


def progress(best, last, seconds):
    """statistic.json's metrics (numbers only, equal for equal runs) and, apart, the timings."""
    return {"metrics": {"best": best, "last": last},
            "durations": {"epoch_seconds": seconds, "total_seconds": round(sum(seconds), 3)}}


def model_graph(model, example_input):
    """The model's graph as SummaryWriter.add_graph draws it (a GraphDef and its RunMetadata),
    traced without torch.jit.trace's check: the check runs the model again through the JIT's
    executor, after which the whole run's eager training was 1 to 2% slower (measured), and
    a graph to look at needs no check. `example_input`: a tensor, a tuple of the forward's
    arguments, or a dict of its keyword arguments; the outputs may be dicts or tuples (strict off)."""
    if isinstance(example_input, dict):
        trace = torch.jit.trace(model, example_kwarg_inputs=example_input, check_trace=False, strict=False)
    else:
        trace = torch.jit.trace(model, example_input, check_trace=False, strict=False)
    torch._C._jit_pass_inline(trace.graph)
    nodes = _pytorch_graph.parse(trace.graph, trace, example_input)
    # as add_graph: its nodes' device is always the CPU, whatever the model ran on
    stats = _pytorch_graph.StepStats(dev_stats=[_pytorch_graph.DeviceStepStats(device="/device:CPU:0")])
    return (_pytorch_graph.GraphDef(node=nodes, versions=_pytorch_graph.VersionDef(producer=22)),
            _pytorch_graph.RunMetadata(step_stats=stats))


def environment(device):
    """What the run ran on, beside its code and data: versions, GPUs, host, and the settings
    that change its numbers (intra-op threads, deterministic kernels, the device kind)."""
    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "host": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": torch.device(device).type, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "mkl_num_threads": os.environ.get("MKL_NUM_THREADS"),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


class Recorder:
    def __init__(self, exp_dir, rank, cfg, mode=protocol.RUN):
        self.active = exp_dir is not None and rank == 0
        self.exp_dir, self.cfg = exp_dir, cfg
        self.mode = mode
        self.continuing = mode == protocol.CONTINUE
        self.statistic = read_json(exp_dir / STATISTIC) if self.active else None
        self.events = None
        # the waiting for the disk is done on a second thread while training goes on
        self.writer_thread = ThreadPoolExecutor(max_workers=1) if self.active else None
        self.pending = None  # the last checkpoint's write
        self.queued = []  # every write handed to the writer thread, done or not: its error surfaces
        self.steps, self.flushed = [], time.time()  # step scalars not yet written
        self.accepted = None  # changed data that ACCEPT_DATA=1 let a continue go on over

    def start(self, position, step, path, skipped, world_size, device, data_record, resumed_progress, source=None):
        """Mark the experiment running, open its events file; on a continue or a warm start,
        say from where: `position` is (epochs done, steps done into the next, steps an epoch)."""
        start_epoch, done, steps_per_epoch = position
        if not self.active:
            return
        statistic = self.statistic
        if source is not None:
            statistic["init_from"] = source
            how = "its whole training state (init_resume)" if source["resume"] else "its weights"
            print(f"--- {now()}: starting from {source['experiment']}, epoch {source['epoch']}: {how}")
        if self.continuing:
            where = f"step {done} of {steps_per_epoch}" if getattr(self.cfg, "max_steps", None) else \
                f"epoch {start_epoch + 1}, step {done} of {steps_per_epoch}"
            where += f" ({path if path else 'no checkpoint yet'})"
            for bad, error in skipped:
                print(f"warning: {bad} is unreadable ({type(error).__name__}): using an older checkpoint")
            print(f"--- {now()}: continuing {statistic['tag']}/{statistic['id']} from {where}")
            for stale in [*self.exp_dir.glob(".*.tmp*"), *self.exp_dir.glob("checkpoint/.*.tmp*")]:
                stale.unlink()  # a temp file of a write that the interruption cut short
        self.begin_leg(step)
        statistic.update(status="running", hparams=hparams(self.cfg), world_size=world_size, end=None,
                         epoch_steps=steps_per_epoch)
        if data_record is not None and not (self.continuing and statistic.get("data")):
            statistic["data"] = {"key": data_record.get("key"), "fingerprint": data_record["fingerprint"]}
            if data_record.get("facts"):  # what the model was sized by (data.py's facts())
                statistic["data"]["facts"] = data_record["facts"]
        changed = protocol.changed_conditions() if self.continuing else None  # the launcher let it go on
        if changed:
            statistic.setdefault("conditions", {}).setdefault("changed", []).append(
                {"epoch": start_epoch, "step": step, **changed})
        if self.accepted is not None:
            statistic["data"].setdefault("accepted", []).append(self.accepted)
            print(f"note: going on over data {self.accepted['fingerprint'][:12]} (ACCEPT_DATA=1): recorded in "
                  "statistic.json's data.accepted")
        statistic["environment"] = environment(device)
        if resumed_progress is not None:  # statistic.json may lag: a kill can fall between two writes
            statistic.update(epoch=start_epoch, **resumed_progress)
        write_json(self.exp_dir / STATISTIC, statistic)
        (self.exp_dir / "checkpoint").mkdir(exist_ok=True)
        # a new events file each start; purge_step hides what a killed run logged past the
        # checkpoint (steps above `step`). Every scalar is logged at the global step, so the
        # purge covers them all.
        if self.continuing:  # what the last leg logged past its checkpoint: gone from the files
            drop_past(self.exp_dir / "tensorboard", step)
            for medium in (self.exp_dir / MEDIA).glob("*/*"):
                if not medium.stem.isdigit() or int(medium.stem) > step:  # a torn temp file among them
                    medium.unlink()
        self.events = EventFile(self.exp_dir / "tensorboard", purge_step=step + 1 if self.continuing else None)
        self.events.summary(text_summary("environment", f"`{json.dumps(statistic['environment'])}`"), step)
        self.events.write()
        protocol.mark_started(self.exp_dir)  # the launcher's handshake: accepted, and recording

    def begin_leg(self, step):
        """A new leg of the run in statistic.json's legs: how it started (run; continue; requeue,
        a Slurm job requeued), from which step, where. A leg before it that never said how it
        ended was killed (kill -9, a lost node). The run's error is its last leg's: a continue
        starts without one."""
        legs = self.statistic.setdefault("legs", [])
        if legs and legs[-1].get("ended") is None:
            legs[-1]["ended"] = "killed"
        requeued = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
        how = ("requeue" if requeued else "continue") if self.continuing else "run"
        legs.append({"how": how, "from_step": step, "start": now(), "host": socket.gethostname(),
                     "slurm_job": os.environ.get("SLURM_JOB_ID"), "end": None, "ended": None})
        self.statistic.pop("error", None)

    def end_leg(self, ended):
        leg = (self.statistic.get("legs") or [{}])[-1]
        leg.update(end=now(), ended=ended)

    def graph(self, model, example_input):
        """The model's graph in TensorBoard, if it can be traced: optional, so a model the JIT
        cannot trace costs one warning line, not the run."""
        if not self.active:
            return
        model.eval()  # trace without dropout, so the graph draws nothing from the RNG
        try:
            drawn = model_graph(model, example_input())
        except Exception as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            print(f"warning: the model's graph is not drawn in TensorBoard ({type(error).__name__}: {reason}); "
                  "the run goes on", flush=True)
            return
        self.events.graph(*drawn)
        self.events.write()

    def log_step(self, step, scalars):
        """The training step's scalars, each a curve step/<name> at the global step. They are
        kept and written together every STEP_FLUSH_SECONDS and with the epoch's checkpoint:
        written one by one, events cost a short step a tenth of its time."""
        if not self.active:
            return
        now = time.time()
        self.steps.append((step, now, "step/", scalars))
        if now - self.flushed > STEP_FLUSH_SECONDS:
            self.flush_steps()

    def log_epoch(self, step, results):
        """An epoch's metrics ({"val": {"loss": ...}}) as curves val/loss ..., at the global step;
        written with the checkpoint that follows."""
        if self.active:
            self.steps.append((step, time.time(), "", {f"{split}/{name}": float(value)
                                                       for split, metrics in results.items()
                                                       for name, value in metrics.items()}))

    def log_media(self, step, shown):
        """An evaluation's media (gitexp.media, prepared: by <set>_<name>) into TensorBoard's Images
        and Text tabs as <set>/<name>, written with the checkpoint that follows, and into
        media/<set>_<name>/<step>.png or .txt on the writer thread."""
        if not self.active:
            return
        for name, (suffix, content, shape) in shown.items():
            tag = name.replace("_", "/", 1)
            if suffix == "png":
                image = Summary.Image(height=shape[0], width=shape[1], colorspace=shape[2], encoded_image_string=content)
                self.events.summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
            else:
                self.events.summary(text_summary(tag, content), step)
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            self.submit(atomic_write, self.exp_dir / MEDIA / name / f"{step}.{suffix}", data)

    def flush_steps(self):
        """The kept scalars into the events file, one event a step, read from the device in one
        copy (one at a time, each would wait for the GPU)."""
        tensors = [value for _, _, _, scalars in self.steps for value in scalars.values() if torch.is_tensor(value)]
        if len({t.device for t in tensors}) > 1:
            tensors = [t.cpu() for t in tensors]
        read = iter(torch.stack(tensors).tolist() if tensors else [])
        for step, wall_time, prefix, scalars in self.steps:
            self.events.scalars(step, [(prefix + name, next(read) if torch.is_tensor(value) else value)
                                       for name, value in scalars.items()], wall_time)
        self.events.write()
        self.steps, self.flushed = [], time.time()

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

    def save(self, position, state, is_best, best, last, seconds, final=False):
        """Save the checkpoint of `position` (epochs done, steps into the next) and
        statistic.json; they reach the disk on the writer thread. The curves up to its step
        reach the events file before it, so a continue from it neither loses nor repeats a
        point."""
        if not self.active:
            return
        if self.pending is not None:  # at most one checkpoint in flight: a slow disk holds training
            self.pending.result()  # up, not memory
        taken = snapshot(state)  # a copy training can no longer change, for the writer thread
        self.statistic.update(epoch=position[0], step=state["step"], **progress(best, last, list(seconds)))
        self.flush_steps()
        statistic = stage(self.exp_dir / STATISTIC, json_bytes(self.statistic))
        self.pending = self.submit(self._persist, position, taken, is_best, statistic, final)

    def _persist(self, position, taken, is_best, statistic, final):
        """What waits for the disk: the checkpoint (serialised here first), then
        statistic.json, each in place once it is on disk; so statistic.json never claims an
        epoch not yet on disk. The curves up to it were written before (a checkpoint never
        lacks a curve's point before it)."""
        folder = self.exp_dir / "checkpoint"
        path = checkpoint_path(folder, position)
        try:
            staged = stage(path, serialize(taken))
            save_checkpoint(folder, position, staged, is_best, self.cfg.keep_checkpoints, final)
        except BaseException:
            discard(statistic)
            raise
        publish(statistic, self.exp_dir / STATISTIC)

    def stop(self, epochs, done, step):
        """Stopped on request, its checkpoint written: continuable."""
        if not self.active:
            return
        self.flush_steps()
        self.wait()
        self.events.close()
        self.statistic.update(status="stopped", end=now())
        self.end_leg("stopped")
        write_json(self.exp_dir / STATISTIC, self.statistic)
        tag, number = self.statistic["tag"], self.statistic["id"]
        max_steps = getattr(self.cfg, "max_steps", None)
        where = f"step {step} of {max_steps}" if max_steps else f"epoch {epochs} and {done} step(s) more"
        print(f"stopped: {tag}/{number} after {where}: make continue TAG={tag} ID={number} goes on from step {step}",
              flush=True)

    def wait(self):
        """Until every write handed to the writer thread is done; the first error surfaces."""
        for future in self.queued:
            future.result()
        self.queued = []

    def data_at_end(self, data_record):
        """The data's fingerprint taken again as the run ends: where it differs from the one the
        run last ran on, the data changed under the run; statistic.json keeps both."""
        if not self.active or data_record is None or not self.statistic.get("data"):
            return
        recorded = self.statistic["data"]
        last = last_fingerprint(recorded)
        if data_record["fingerprint"] != last:
            recorded["at_end"] = data_record["fingerprint"]
            print(f"warning: the data changed during the run: {last[:12]} at its start, "
                  f"{data_record['fingerprint'][:12]} at its end (statistic.json: data.at_end)")

    def finish(self, best, last, step, early_stop=None):
        """Mark the experiment finished. finished.txt is written first and only once, so a kill
        between the two steps leaves an experiment that `make continue` finishes cleanly.

        The hparams and the best/last metrics go into the run's own events file, for
        TensorBoard's HParams tab. Not SummaryWriter.add_hparams' way: it opens a second events
        file, and its experiment summary would make TensorBoard show only the hparams of
        whichever run it reads first; scripts/tb.py writes one for all the runs it serves."""
        if not self.active:
            return
        self.flush_steps()
        final = {f"{FINAL_PREFIX}{when}/{k}": v for when, m in (("best", best), ("last", last)) if m for k, v in m.items()}
        kinds = {bool: "bool_value", float: "number_value", str: "string_value"}
        values = tensorboard_hparams(hparams(self.cfg), self.statistic["seed"], self.statistic["fix"])
        start = SessionStartInfo(hparams={k: Value(**{kinds[type(v)]: v}) for k, v in values.items()})
        self.events.summary(hparams_summary(hparams_metadata.SESSION_START_INFO_TAG, session_start_info=start), step)
        self.events.scalars(step, [(name, float(value)) for name, value in final.items()])
        self.events.summary(hparams_summary(hparams_metadata.SESSION_END_INFO_TAG,
                                            session_end_info=SessionEndInfo(status=STATUS_SUCCESS)), step)
        self.events.close()  # its fsync while the writer thread's is on the last checkpoint
        self.wait()  # finished means every checkpoint is on disk
        statistic = self.statistic
        if early_stop is not None:
            statistic["early_stop"] = early_stop
        append_line_once(FINISHED_LIST, f"{statistic['tag']}/{statistic['id']}")
        statistic.update(status="finished", end=now())
        self.end_leg("finished")
        write_json(self.exp_dir / STATISTIC, statistic)
