"""`make continue` and `make rerun`: exact resume, exact reproduction (issue 3), on every task
(issue 10): no metric name or config key of the example, but `epochs` and the run's monitor."""
import io
import json
import os
import random
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import HEAVY_TASK_PARAMS, ROOT, assert_refused, kill_group, wait_for


def checkpoint_written(epoch):
    def condition(folder):
        link = folder / "checkpoint" / "epoch_last.pth"
        return link.is_symlink() and os.readlink(link) == f"epoch_{epoch}.pth"
    return condition


def kill_when(project, condition):
    """Run a FIX=1 experiment and SIGKILL its process group once `condition(folder)` holds.
    A moment of a few milliseconds can slip past on a busy machine: then try a new tag.
    Returns the tag of the killed run."""
    for attempt in range(5):
        tag = f"cut{attempt}"
        run = project.start("run", TAG=tag, FIX="1")
        wait_for(lambda: condition(project.result(tag, 0)) or run.poll() is not None, interval=0.0005)
        if run.poll() is None:
            kill_group(run)
            assert project.statistic(tag, 0)["status"] == "running"
            return tag
    raise AssertionError("five runs ended before the moment to kill them came")


def assert_same_state(final, reference):
    """Two checkpoints hold the same training state, bit for bit: parameters, optimizer and
    scheduler (whatever configure_optimizers built), epoch and step."""
    for name, tensor in reference["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    assert_equal_trees(final["optimizer"], reference["optimizer"])
    assert_equal_trees(final["scheduler"], reference["scheduler"])
    assert (final["epoch"], final["step"]) == (reference["epoch"], reference["step"])


def assert_equal_trees(a, b, where="state"):
    if torch.is_tensor(b):
        assert torch.is_tensor(a) and torch.equal(a, b), where
    elif isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in b:
            assert_equal_trees(a[key], b[key], f"{where}.{key}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for n, (x, y) in enumerate(zip(a, b)):
            assert_equal_trees(x, y, f"{where}[{n}]")
    else:
        assert a == b, where


def epoch_tag(project, tag):
    """The TensorBoard curve of the run's monitored metric: val_loss is val/loss."""
    return project.monitor(tag, 0).replace("_", "/", 1)


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
def test_killed_after_second_checkpoint_continues_to_the_same_metrics(task_project):
    project = task_project
    project.configure(**project.slow)
    project.make("run", TAG="whole", FIX="1")
    tag = kill_when(project, checkpoint_written(2))
    assert "stopped" in project.make("ls", TAG=tag).stdout  # not "running": no process holds its lock
    past = sorted((project.result(tag, 0) / "media").iterdir())[0] / "100000.png"
    past.write_bytes(b"made past the checkpoint by the killed leg, whose evaluation the continue makes again")
    result = project.make("continue", TAG=tag)
    assert f"continuing {tag}/0 from epoch 3, step 0 of " in result.stdout
    cut, whole = project.statistic(tag, 0), project.statistic("whole", 0)
    assert cut["status"] == "finished" and cut["metrics"] == whole["metrics"]
    assert cut["seed"] == whole["seed"]
    final = torch.load(project.result(tag, 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
    reference = torch.load(project.result("whole", 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
    assert_same_state(final, reference)
    assert project.finished() == ["whole/0", f"{tag}/0"]
    log = (project.result(tag, 0) / "log").read_text()
    assert log.count("epoch 1/4") == 1 and f"continuing {tag}/0" in log and log.count("epoch 4/4") == 1
    assert len(list((project.result(tag, 0) / "tensorboard").glob("events.out.tfevents.*"))) >= 2
    # the curves read as one run: what the killed run logged past its checkpoint is purged
    events = EventAccumulator(str(project.result(tag, 0) / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars(epoch_tag(project, tag))]
    uninterrupted = EventAccumulator(str(project.result("whole", 0) / "tensorboard")).Reload()
    assert steps == [e.step for e in uninterrupted.Scalars(epoch_tag(project, tag))] == sorted(set(steps))
    assert len(steps) == 4 or whole["hparams"].get("eval_every")  # an epoch's end, or every N steps too
    step_curves = [name for name in events.Tags()["scalars"] if name.startswith("step/")]
    assert step_curves
    for name in step_curves:  # one point a step, each once
        assert [e.step for e in events.Scalars(name)] == list(range(1, steps[-1] + 1)), name
    # its media (the example's confusion matrix, charlm's line, vision's inputs) as the uninterrupted run's
    assert media(project.result(tag, 0)) == media(project.result("whole", 0)) != {}


def media(folder):
    """Every media file of a run and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in (folder / "media").rglob("*.*")}


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
def test_killed_during_a_checkpoint_write_continues_cleanly(task_project):
    project = task_project
    project.configure(**project.slow)
    project.make("run", TAG="whole", FIX="1")
    tag = kill_when(project, lambda exp: (exp / "checkpoint").is_dir()
                    and any(name.startswith(".") for name in os.listdir(exp / "checkpoint")))
    folder = project.result(tag, 0) / "checkpoint"
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers and all(".tmp" in name for name in leftovers)  # the half-written file is a temp file
    for checkpoint in folder.glob("epoch_*.pth"):
        torch.load(checkpoint, weights_only=True)  # every visible checkpoint is whole
    project.make("continue", TAG=tag, ID="0")
    assert project.statistic(tag, 0)["metrics"] == project.statistic("whole", 0)["metrics"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
def test_killed_before_first_checkpoint_starts_again_from_epoch_0(task_project):
    project = task_project
    project.configure(**project.slow)
    project.make("run", TAG="whole", FIX="1")
    tag = kill_when(project, lambda exp: (exp / "statistic.json").exists()
                    and json.loads((exp / "statistic.json").read_text())["hparams"])
    assert not (project.result(tag, 0) / "checkpoint" / "epoch_1.pth").exists()
    assert "from epoch 1, step 0 of " in project.make("continue", TAG=tag).stdout
    assert project.statistic(tag, 0)["metrics"] == project.statistic("whole", 0)["metrics"]


def test_rng_states_of_an_older_checkpoint_restore_the_same_draws():
    """Checkpoints hold the Mersenne Twister states as tensors; those written before kept them
    as lists of ints, and still continue the same."""
    sys.path.insert(0, str(ROOT / "code"))
    try:
        from gitexp.checkpoint import rng_state, set_rng_state
    finally:
        sys.path.pop(0)
    generator = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save(rng_state(generator), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    def draws():
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()
    expected = draws()
    as_lists = dict(state, python=(state["python"][0], state["python"][1].tolist(), state["python"][2]),
                    numpy=dict(state["numpy"], state=dict(state["numpy"]["state"], key=state["numpy"]["state"]["key"].tolist())))
    for restored in (state, as_lists):
        random.seed(9), np.random.seed(9), torch.manual_seed(9)
        set_rng_state(restored, generator)
        assert draws() == expected


def test_unreadable_newest_checkpoint_falls_back_to_an_older_one(project):
    project.make("run", TAG="disk", FIX="1")
    folder = project.result("disk", 0)
    reference = project.statistic("disk", 0)
    statistic = dict(reference, status="failed")
    (folder / "statistic.json").write_text(json.dumps(statistic))
    newest = folder / "checkpoint" / "epoch_3.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a disk error
    result = project.make("continue", TAG="disk")
    assert "epoch_3.pth is unreadable" in result.stdout and "from epoch 3, step 0 of " in result.stdout
    assert project.statistic("disk", 0)["metrics"] == reference["metrics"]
    assert project.finished() == ["disk/0"]  # once


def test_no_readable_checkpoint_is_a_clear_error(project):
    project.make("run", TAG="disk")
    folder = project.result("disk", 0)
    (folder / "statistic.json").write_text(json.dumps(dict(project.statistic("disk", 0), status="failed")))
    for checkpoint in (folder / "checkpoint").glob("epoch_[0-9]*.pth"):
        checkpoint.write_bytes(b"garbage")
    before = project.snapshot()
    assert_refused(project.make("continue", TAG="disk", check=False), "no readable checkpoint")
    assert project.snapshot() == before


def test_rerun_after_head_moved_on_reproduces_exactly(task_project):
    project = task_project
    project.make("run", TAG="paper", FIX="1")
    project.configure(epochs=2)
    result = project.make("rerun", TAG="paper")
    original, rerun = project.statistic("paper", 0), project.statistic("paper", 1)
    assert rerun["rerun_of"] == "paper/0" and rerun["commit"] == original["commit"]
    assert rerun["hparams"] == original["hparams"] and rerun["hparams"]["epochs"] == 3
    assert rerun["metrics"] == original["metrics"]
    assert "metrics equal to paper/0" in result.stdout
    final = torch.load(project.result("paper", 1) / "checkpoint" / "epoch_last.pth", weights_only=True)
    assert_same_state(final, torch.load(project.result("paper", 0) / "checkpoint" / "epoch_last.pth", weights_only=True))


def test_rerun_reports_differences_metric_by_metric(project):
    project.make("run", TAG="paper", FIX="1")
    folder = project.result("paper", 0)
    statistic = project.statistic("paper", 0)
    monitor = project.monitor("paper", 0)
    statistic["metrics"]["best"][monitor] = 0.5  # as if the original had another number
    (folder / "statistic.json").write_text(json.dumps(statistic))
    out = project.make("rerun", TAG="paper", ID="0").stdout
    assert "metrics differ from paper/0 in 1 of" in out and f"best.{monitor}: 0.5 ->" in out


def test_continue_picks_the_highest_unfinished_id(project):
    for _ in range(3):
        project.make("run", TAG="many", FIX="1")
    for number in (0, 1):
        path = project.result("many", number) / "statistic.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), status="failed")))
    assert "continuing many/1" in project.make("continue", TAG="many").stdout
    assert project.statistic("many", 1)["status"] == "finished"
    assert project.statistic("many", 0)["status"] == "failed"


def make_unfinished(project, tag, **config):
    if config:
        project.configure(**config)
    project.make("run", TAG=tag)
    path = project.result(tag, 0) / "statistic.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), status="failed")))


CONTINUE_BAD = [
    ({"TAG": "nope"}, "unknown tag nope"),
    ({"TAG": "open", "ID": "7"}, "there is no experiment open/7"),
    ({"TAG": "open", "ID": "x"}, "ID='x' is not a number"),
    ({"TAG": "open", "ID": "../0"}, "is not a number"),
    ({"TAG": "done"}, "done has no unfinished experiment"),
    ({"TAG": "done", "ID": "0"}, "already finished"),
]


def test_continue_bad_input(project):
    make_unfinished(project, "open")
    project.make("run", TAG="done")
    for variables, message in CONTINUE_BAD:  # one project for every case: each run costs seconds
        before = project.snapshot()
        assert_refused(project.make("continue", check=False, **variables), message)
        assert project.snapshot() == before, variables



def test_continue_refuses_another_tags_code(project):
    make_unfinished(project, "moved")
    project.configure(epochs=2)
    project.git("tag", "-f", "-a", "-m", "moved by hand", "moved")
    before = project.snapshot()
    assert_refused(project.make("continue", TAG="moved", check=False), "another code's experiment")
    assert project.snapshot() == before


def test_continue_refuses_a_checkpoint_of_another_model_shape(project):
    make_unfinished(project, "small")
    project.configure(channels=16)
    project.make("run", TAG="wide")
    target = project.result("small", 0) / "checkpoint"
    for checkpoint in target.glob("epoch_[0-9]*.pth"):
        wide = project.result("wide", 0) / "checkpoint" / checkpoint.name
        checkpoint.write_bytes(wide.read_bytes())
    before = project.snapshot()
    assert_refused(project.make("continue", TAG="small", check=False), "different model")
    assert project.snapshot() == before


RERUN_BAD = [
    ({"TAG": "nope"}, "unknown tag nope"),
    ({"TAG": "done", "ID": "4"}, "there is no experiment done/4"),
    ({"TAG": "done", "ID": "-1"}, "is not a number"),
]


def test_rerun_bad_input(project):
    project.make("run", TAG="done")
    for variables, message in RERUN_BAD:  # one project for every case: each run costs seconds
        before = project.snapshot()
        assert_refused(project.make("rerun", check=False, **variables), message)
        assert project.snapshot() == before, variables



def test_source_sh_wrappers_call_the_make_targets(project):
    script = ". scripts/source.sh && run wrap -f TB=0 PYTHON=\"$PY\" && re wrap 0 TB=0 PYTHON=\"$PY\""
    import subprocess
    import sys
    result = subprocess.run(["sh", "-c", script], cwd=project.path, env=dict(project.env, PY=sys.executable),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert project.statistic("wrap", 0)["fix"] is True
    assert project.statistic("wrap", 1)["rerun_of"] == "wrap/0"
