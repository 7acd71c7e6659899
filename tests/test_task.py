"""Make it yours (issue 10): another task needs no change to the template's files; the best
epoch, the logged scalars and `make ls` follow the task's own config."""
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import HEAVY_TASK_PARAMS, ROOT, TASKS_DIR

sys.path.insert(0, str(ROOT / "code"))
from gitexp import YOURS  # noqa: E402  (the template's own list of the researcher's files)

sys.path.pop(0)


def tracked(folder):
    listing = subprocess.run(["git", "ls-files"], cwd=folder, capture_output=True, text=True, check=True).stdout
    return {name: (folder / name).read_bytes() for name in listing.splitlines()}


def test_the_second_task_changes_only_the_researchers_files(pristine, pristine_charlm):
    assert sorted(p.name for p in (TASKS_DIR / "charlm").iterdir()) == sorted(
        name for name in YOURS if (TASKS_DIR / "charlm" / name).exists())
    digits, charlm = tracked(pristine), tracked(pristine_charlm)
    assert digits.keys() == charlm.keys()
    differ = sorted(name for name in digits if digits[name] != charlm[name])
    assert differ and all(name.startswith("code/") and name[len("code/"):] in YOURS for name in differ), differ
    assert "code/main.py" not in differ and not any(name.startswith("code/gitexp/") for name in differ)


def test_a_misspelled_monitor_is_one_line_at_epoch_1_and_the_run_fails(task_project):
    project = task_project
    project.make("run", TAG="good")
    monitor = project.monitor("good", 0)
    project.configure(monitor=monitor + "x")
    result = project.make("run", TAG="typo", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    line = f"error: monitor = '{monitor}x' is not a metric of epoch 1 (there are: "
    said = [row for row in result.stdout.splitlines() if row.startswith("error: ")]
    assert len(said) == 1 and said[0].startswith(line) and monitor in said[0], result.stdout
    assert any(row.startswith("error: experiment typo/0 failed") and line[len("error: "):] in row
               for row in result.stderr.splitlines()), result.stderr
    log = (project.result("typo", 0) / "log").read_text()
    assert said[0] in log.splitlines() and "epoch 2/3" not in log
    # after the first evaluation: at epoch 1's end, or (eval_every) at a step inside it
    assert "epoch 1/3" in log or "in epoch 1 " in log, log
    assert project.statistic("typo", 0)["status"] == "failed"
    assert project.finished() == ["good/0"]


def test_a_monitor_mode_neither_min_nor_max_fails_before_training(project):
    project.configure(monitor_mode="highest")
    result = project.make("run", TAG="mode", check=False)
    assert result.returncode != 0
    assert "error: monitor_mode = 'highest' in code/config.py is neither 'min' nor 'max'" in result.stdout
    assert "epoch 1/" not in (project.result("mode", 0) / "log").read_text()


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
@pytest.mark.parametrize("mode", ["min", "max"])
def test_the_best_epoch_follows_monitor_and_mode(task_project, mode):
    """Whatever the task and direction: epoch_best.pth and metrics.best are the evaluation
    (an epoch's end; with eval_every, any evaluation) whose monitored curve is lowest (min) or
    highest (max)."""
    project = task_project
    project.configure(epochs=4, monitor_mode=mode)
    project.make("run", TAG="best")
    statistic = project.statistic("best", 0)
    monitor = statistic["hparams"]["monitor"]
    events = EventAccumulator(str(project.result("best", 0) / "tensorboard"))
    events.Reload()
    points = events.Scalars(monitor.replace("_", "/", 1))
    curve = [e.value for e in points]
    pick = min if mode == "min" else max
    first = curve.index(pick(curve))  # the first evaluation that reached it
    best_link = project.result("best", 0) / "checkpoint" / "epoch_best.pth"
    if "step" in statistic["metrics"]["best"]:  # eval_every
        assert statistic["metrics"]["best"]["step"] == points[first].step
        assert torch.load(best_link, weights_only=True)["step"] == points[first].step
    else:
        assert len(curve) == 4
        assert statistic["metrics"]["best"]["epoch"] == first + 1
        assert os.readlink(best_link) == f"epoch_{first + 1}.pth"
    rows = project.make("ls", TAG="best").stdout.splitlines()
    assert rows[0].split()[-3:] == ["monitor", "best", "note"]
    assert rows[1].split()[-2] == monitor  # a run with nothing to note: its last cell is best
    assert float(rows[1].split()[-1]) == pytest.approx(statistic["metrics"]["best"][monitor], abs=1e-4)


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
def test_every_scalar_of_the_training_step_is_a_curve(task_project):
    project = task_project
    project.make("run", TAG="curves")
    events = EventAccumulator(str(project.result("curves", 0) / "tensorboard"))
    events.Reload()
    step_curves = {name for name in events.Tags()["scalars"] if name.startswith("step/")}
    last = project.statistic("curves", 0)["metrics"]["last"]
    # each step scalar is a curve, and its epoch mean the metric train_<name>
    assert step_curves and {f"train_{name[len('step/'):]}" for name in step_curves} <= last.keys()
    if project.task == "charlm":  # a per-step schedule: lr changes inside an epoch
        assert {"step/lr", "step/grad_norm"} <= step_curves
        lrs = [e.value for e in events.Scalars("step/lr")]
        steps_per_epoch = len(lrs) // 3
        assert len(set(lrs[:steps_per_epoch])) == steps_per_epoch


def test_a_value_set_in_the_environment_is_named_in_a_note(project):
    env = dict(project.env, TB="0", GPUS="0")
    # PYTHON on the command line, as every test gives it: else make ls would build a .venv first
    result = subprocess.run(["make", "ls", f"PYTHON={sys.executable}"], cwd=project.path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: GPUS TB set in the environment, ignored: give them on the command line, "
                     "e.g. make ls GPUS=0 TB=0"], result.stdout
