"""Faults: SIGKILL at random moments, then `make continue`; a full disk (issue 7).

Marked `faults`, so `pytest -m faults` runs them alone. The default suite kills at four
moments, one of each kind, on each task; `make test-faults` runs all ten on each.
"""
import json
import os
import random
import re
import subprocess
import time

import pytest
import torch

from conftest import HEAVY_TASK_PARAMS, SHAPE_TASKS, TASKS, copy_project, kill_group, pristine_of, wait_for

pytestmark = pytest.mark.faults
EPOCHS = 4
assert all(task["slow"]["epochs"] == EPOCHS for name, task in TASKS.items() if name not in SHAPE_TASKS)


def hidden_temp(folder):
    return folder.is_dir() and any(name.startswith(".") and ".tmp" in name for name in os.listdir(folder))


def kill_moment(kind, rng, folder):
    """A condition that holds at the moment to kill, for one kind of moment."""
    checkpoints = folder / "checkpoint"
    if kind == "epoch":  # somewhere inside an epoch after the first checkpoint
        after = rng.randint(1, EPOCHS - 1)
        delay = rng.uniform(0.0, 0.15)
        seen = []

        def inside_epoch():
            link = checkpoints / "epoch_last.pth"
            if not seen and link.is_symlink() and os.readlink(link) == f"epoch_{after}.pth":
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] >= delay
        return inside_epoch
    if kind == "checkpoint":  # a checkpoint's temp file is being written
        return lambda: hidden_temp(checkpoints)
    if kind == "statistic":  # an update of statistic.json is being written
        return lambda: (folder / "statistic.json").exists() and hidden_temp(folder)
    if kind == "last":  # the last checkpoint is written, the run not yet marked finished
        link = checkpoints / "epoch_last.pth"
        return lambda: link.is_symlink() and os.readlink(link) == f"epoch_{EPOCHS}.pth"
    raise ValueError(kind)


KINDS = ["epoch", "checkpoint", "statistic", "last"]
# ten moments; the first four (one of each kind) run by default, the rest with -m slow
MOMENTS = [(kind, n) for n, kind in enumerate(KINDS)] + [(KINDS[n % 4], n) for n in range(4, 10)]


@pytest.fixture(scope="module", params=HEAVY_TASK_PARAMS)
def prepared(request, tmp_path_factory):
    """A copy of a task with its slow config and one uninterrupted FIX=1 run to compare with."""
    project = copy_project(pristine_of(request, request.param), tmp_path_factory.mktemp("faults"), request.param)
    project.configure(**project.slow)
    project.make("run", TAG="whole", FIX="1")
    return project


@pytest.fixture
def faulty(prepared, tmp_path):
    return copy_project(prepared.path, tmp_path, prepared.task)


def position(name):
    """(epochs done, steps into the next) of epoch_<n>.pth and step_<n>_<k>.pth; links last."""
    numbers = [int(n) for n in re.findall(r"[0-9]+", name)]
    return (numbers + [0])[:2] if numbers else [-1, -1]


def assert_whole(folder):
    """Nothing half-written is visible: every checkpoint loads, statistic.json parses."""
    json.loads((folder / "statistic.json").read_text())
    for checkpoint in (folder / "checkpoint").glob("*.pth") if (folder / "checkpoint").exists() else []:
        torch.load(checkpoint, weights_only=True)


@pytest.mark.parametrize("kind, n", [pytest.param(k, n, marks=[pytest.mark.slow] if n >= 4 else [],
                                                  id=f"{n}-{k}") for k, n in MOMENTS])
def test_killed_at_a_random_moment_continues_to_the_same_result(faulty, kind, n):
    reference = faulty.statistic("whole", 0)
    for attempt in range(5):  # a moment of a few milliseconds can slip past; try a new run then
        tag = f"cut{attempt}"
        folder = faulty.result(tag, 0)
        run = faulty.start("run", TAG=tag, FIX="1")
        condition = kill_moment(kind, random.Random(n * 10 + attempt), folder)
        try:
            wait_for(lambda: condition() or run.poll() is not None, interval=0.0005)
        finally:
            if run.poll() is None:
                kill_group(run)
        if json.loads((folder / "statistic.json").read_text())["status"] != "finished":
            break
    else:
        pytest.fail(f"five runs ended before a {kind} moment could be hit")
    assert_whole(folder)
    faulty.make("continue", TAG=tag)
    statistic = faulty.statistic(tag, 0)
    assert statistic["status"] == "finished"
    assert statistic["metrics"] == reference["metrics"]
    assert faulty.finished().count(f"{tag}/0") == 1
    assert not hidden_temp(folder) and not hidden_temp(folder / "checkpoint")


def test_a_full_disk_is_a_clear_error_and_keeps_the_last_good_checkpoint(faulty):
    reference = faulty.result("whole", 0)
    size = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file() and not p.is_symlink())
    one_checkpoint = (reference / "checkpoint" / "epoch_1.pth").stat().st_size
    mount_point = faulty.path / "__result__" / "full"
    mount_point.mkdir(parents=True)
    # room for everything but the last checkpoint and a half
    limit = size - one_checkpoint * 3 // 2
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        result = faulty.make("run", TAG="full", FIX="1", check=False)
        folder = faulty.result("full", 0)
        assert result.returncode != 0
        assert "error: the disk is full" in (folder / "log").read_text()
        statistic = json.loads((folder / "statistic.json").read_text())
        assert statistic["status"] == "failed"
        # the newest checkpoint whole and the one statistic.json names: an epoch's, or (a task with
        # eval_every, whose step checkpoints fill the disk sooner) one inside an epoch
        newest = max((folder / "checkpoint").glob("*.pth"), key=lambda p: position(p.name), default=None)
        assert newest is not None and not newest.is_symlink(), list((folder / "checkpoint").iterdir())
        kept = torch.load(newest, weights_only=True)
        assert kept["epoch"] < EPOCHS and kept["step"] >= 1
        assert (statistic["epoch"], statistic["step"]) == (kept["epoch"], kept["step"])
        for link in ("epoch_last.pth", "epoch_best.pth"):
            if (folder / "checkpoint" / link).is_symlink():
                torch.load(folder / "checkpoint" / link, weights_only=True)
        assert not hidden_temp(folder) and not hidden_temp(folder / "checkpoint")
        assert "full/0" not in faulty.finished()
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
