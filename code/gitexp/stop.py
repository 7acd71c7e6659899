"""Stopping a run cleanly (the template's machinery): SIGTERM, SIGUSR1 (Slurm's warning before
it ends a job: --signal=USR1@<seconds>) or a first Ctrl+C ask the loop to stop after the current
step; it writes a checkpoint there, marks the experiment stopped and exits with protocol.STOPPED. A
second Ctrl+C stops at once (the last checkpoint stays the place to continue from). The launcher
passes on a signal it gets as the file protocol.STOP in the experiment's folder, which reaches every
rank under torchrun too. The ranks agree whether to stop at steps fixed in advance, about once
a second, so all stop at the same step and no other step waits on a collective (and its
`.item()`, on a GPU, for the device).
"""
import contextlib
import functools
import os
import signal
import time

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from gitexp import dist as ranks, protocol

AGREE_SECONDS = 1.0  # under torchrun: how often the ranks agree whether to stop
MOST_STEPS_BETWEEN = 1000


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


@contextlib.contextmanager
def held():
    """The stop signals blocked in this thread while the `with` runs. The processes it starts (a
    DataLoader's workers, forked or spawned) inherit them blocked: a signal sent to every process
    of the run (scancel, killall, a supervisor, Ctrl+C) stops the run here at a step, and never
    kills a worker under it first. One that comes meanwhile is handled when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def quiet_workers(loader):
    """A DataLoader's workers (forked, spawned or from a forkserver) ignore the stop signals and
    end with the process that started them, even when it is killed: its worker_init_fn, wrapped.
    The loop stops the run at a step; a worker a signal killed first would be the run's error,
    and a worker of a killed run would go on for seconds, until it next looks at its parent."""
    if isinstance(loader, DataLoader) and loader.num_workers > 0 and \
            getattr(loader.worker_init_fn, "func", None) is not worker_started:
        loader.worker_init_fn = functools.partial(worker_started, loader.worker_init_fn)


def worker_started(init, worker_id):
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    ranks.die_with_parent()
    if init is not None:
        init(worker_id)


class Stopped(Exception):
    """The loop stopped on request, after writing a checkpoint."""


class StopRequest:
    def __init__(self, exp_dir, world_size, device):
        self.asked, self.world_size, self.device = None, world_size, device
        self.file = exp_dir / protocol.STOP if exp_dir is not None else None
        self.next_step, self.since = 1, (0, time.perf_counter())  # the next agreement; the last one
        # make check's runs stop after a step every rank knows in advance: no agreement needed
        self.stop_at, self.step = int(os.environ.get(protocol.STOP_AT) or 0) or None, 0
        for number in STOP_SIGNALS:
            signal.signal(number, self.ask)

    def ask(self, number, frame):
        if number == signal.SIGINT and self.asked == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl+C: at once
        self.asked = signal.Signals(number).name

    def asked_here(self):
        return self.asked is not None or (self.file is not None and self.file.exists())

    def agreed(self, step=None):
        """Whether to stop now: after training step `step`, or (None) at an epoch's end, where
        every rank agrees at once. One process looks at every step. Under torchrun the ranks
        agree only at the steps they agreed on at the last agreement, about AGREE_SECONDS
        apart at the pace they see (the fastest rank's guess wins: the same on every rank)."""
        self.step = self.step if step is None else step
        if self.stop_at is not None and self.step >= self.stop_at:
            return True
        if self.world_size == 1:
            return self.asked_here()
        if step is not None and step < self.next_step:
            return False
        between = 1
        if step is not None:
            last_step, last_time = self.since
            seconds_a_step = (time.perf_counter() - last_time) / max(1, step - last_step)
            between = max(1, min(MOST_STEPS_BETWEEN, int(AGREE_SECONDS / max(seconds_a_step, 1e-9))))
        # MAX over ranks of (asked, -between): asked anywhere, and the fewest steps between
        flag = torch.tensor([1.0 if self.asked_here() else 0.0, -float(between)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        asked, minus_between = flag.tolist()
        if step is not None:
            self.next_step, self.since = step + int(-minus_between), (step, time.perf_counter())
        return asked > 0
