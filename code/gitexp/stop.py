"""Stopping a run cleanly (the template's machinery): SIGTERM, SIGUSR1 (Slurm's warning before
it ends a job: --signal=USR1@<seconds>) or a first Ctrl+C ask the loop to stop after the current
step; it writes a checkpoint there, marks the experiment stopped and exits with STOPPED. A
second Ctrl+C stops at once (the last checkpoint stays the place to continue from). The launcher
passes on a signal it gets as the file .stop in the experiment's folder, which reaches every
rank under torchrun too; the ranks agree at every step, so all stop at the same one.
"""
import signal

import torch
import torch.distributed as dist

STOPPED = 75  # exit status: stopped on request, continuable (EX_TEMPFAIL: try again later)


class Stopped(Exception):
    """The loop stopped on request, after writing a checkpoint."""


class StopRequest:
    def __init__(self, exp_dir, world_size, device):
        self.asked, self.world_size, self.device = None, world_size, device
        self.file = exp_dir / ".stop" if exp_dir is not None else None
        for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(number, self.ask)

    def ask(self, number, frame):
        if number == signal.SIGINT and self.asked == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl+C: at once
        self.asked = signal.Signals(number).name

    def agreed(self):
        """Whether to stop now: asked here or on any rank (one collective a step under torchrun)."""
        asked = self.asked is not None or (self.file is not None and self.file.exists())
        if self.world_size > 1:
            flag = torch.tensor([1.0 if asked else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            asked = bool(flag.item())
        return asked
