"""A task shaped like a real vision task (issue 26): a DataLoader with worker processes and
random augmentation, an EMA of the weights declared as extra state, evaluation every few steps.
Killed anywhere, continued, it ends bit for bit where an uninterrupted run does, EMA included.
(Every other guarantee test runs on it too, under the slow marker: conftest's SLOW_TASKS.)"""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import copy_project, kill_group, wait_for
from test_continue import assert_equal_trees, assert_same_state, media


@pytest.fixture
def vision(pristine_vision, tmp_path):
    return copy_project(pristine_vision, tmp_path, "vision")


def inside_epoch_2(folder):
    """A checkpoint of an evaluation inside the second epoch is on disk."""
    return any((folder / "checkpoint").glob("step_1_*.pth"))


def assert_evaluated_every_n_steps(project, tag):
    """eval_every = 7: the best may be an evaluation inside an epoch; its step checkpoint is kept."""
    statistic = project.statistic(tag, 0)
    best = statistic["metrics"]["best"]
    assert statistic["metrics"]["last"]["step"] == statistic["step"] and "step" in best
    folder = project.result(tag, 0) / "checkpoint"
    target = (folder / "epoch_best.pth").resolve()
    assert torch.load(target, weights_only=True)["step"] == best["step"]
    kept = sorted(p.name for p in folder.glob("step_*.pth"))
    assert not kept or kept == [target.name]  # of the step files only the best
    steps = [e.step for e in EventAccumulator(str(project.result(tag, 0) / "tensorboard")).Reload().Scalars("val/acc")]
    total, epochs = statistic["step"], statistic["epoch"]
    assert steps == sorted(set(range(7, total, 7)) | set(range(total // epochs, total + 1, total // epochs)))


@pytest.mark.parametrize("nproc", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_killed_inside_an_epoch_continues_bit_for_bit_ema_included(vision, nproc):
    vision.make("run", TAG="whole", FIX="1", NPROC=nproc)
    assert_evaluated_every_n_steps(vision, "whole")
    run = vision.start("run", TAG="cut", FIX="1", NPROC=nproc)
    folder = vision.result("cut", 0)
    wait_for(lambda: inside_epoch_2(folder) or run.poll() is not None, interval=0.001)
    assert run.poll() is None, "the run ended before the moment to kill it"
    kill_group(run)
    assert json.loads((folder / "statistic.json").read_text())["status"] == "running"
    result = vision.make("continue", TAG="cut", NPROC=nproc)
    assert "continuing cut/0 from epoch 2, step " in result.stdout
    final, reference = (torch.load(vision.result(tag, 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
                        for tag in ("cut", "whole"))
    assert_same_state(final, reference)
    assert final["extra"]["ema"]["n_averaged"] > 0
    assert_equal_trees(final["extra"], reference["extra"], "extra")
    assert vision.statistic("cut", 0)["metrics"] == vision.statistic("whole", 0)["metrics"]
    # a grid of its inputs at every evaluation, those of the killed leg past its checkpoint made again
    assert media(vision.result("cut", 0)) == media(vision.result("whole", 0))
    assert sorted(int(p.stem) for p in (folder / "media" / "val_inputs").iterdir()) == \
        [e.step for e in EventAccumulator(str(folder / "tensorboard")).Reload().Scalars("val/acc")]
