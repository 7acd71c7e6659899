"""`make run`: one experiment, recorded completely (issue 2)."""
import ast
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, assert_refused

STATISTIC_KEYS = {"tag", "id", "commit", "status", "seed", "fix", "host", "start", "end", "epoch",
                  "world_size", "hparams", "metrics", "durations"}


def numbers_only(tree):
    return all(numbers_only(v) if isinstance(v, dict) else isinstance(v, (int, float)) for v in tree.values())


def test_run_records_everything(task_project):
    project = task_project
    out = project.make("run", TAG="demo").stdout
    head = project.git("rev-parse", "HEAD")
    assert project.git("rev-parse", "demo^{commit}") == head
    assert project.git("cat-file", "-t", "demo") == "tag"  # annotated, though git has no identity here
    folder = project.result("demo", 0)

    statistic = project.statistic("demo", 0)
    assert STATISTIC_KEYS <= statistic.keys()
    assert (statistic["tag"], statistic["id"], statistic["commit"]) == ("demo", 0, head)
    assert (statistic["status"], statistic["epoch"], statistic["fix"]) == ("finished", 3, False)
    assert statistic["end"] and statistic["start"] <= statistic["end"]
    config = (project.path / "code" / "config.py").read_text()
    for name, value in statistic["hparams"].items():
        assert f"\n{name} = " in "\n" + config
        assert value == ast.literal_eval(config.split(f"\n{name} = ")[1].split("\n")[0].split("#")[0].strip())
    assert set(statistic["metrics"]) == {"best", "last"} and numbers_only(statistic["metrics"])
    assert statistic["metrics"]["last"]["epoch"] == 3
    monitor = statistic["hparams"]["monitor"]
    assert monitor in statistic["metrics"]["best"] and monitor in statistic["metrics"]["last"]
    data = statistic["data"]  # the prepared data the run read, by key and fingerprint
    assert (project.path / "__data__" / data["key"] / ".gitexp-data.json").is_file()
    assert len(data["fingerprint"]) == 64
    assert len(statistic["durations"]["epoch_seconds"]) == 3

    checkpoints = folder / "checkpoint"
    best = os.readlink(checkpoints / "epoch_best.pth")
    # the best is an epoch's end, or (eval_every: the vision task) a step inside that epoch,
    # whose checkpoint is then kept for the link
    inside = re.fullmatch(r"step_(\d+)_\d+\.pth", best)
    assert best == f"epoch_{statistic['metrics']['best']['epoch']}.pth" or \
        inside and int(inside[1]) + 1 == statistic["metrics"]["best"]["epoch"], best
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(
        ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth", "epoch_best.pth", "epoch_last.pth"] + ([best] if inside else []))
    assert os.readlink(checkpoints / "epoch_last.pth") == "epoch_3.pth"
    state = torch.load(checkpoints / "epoch_last.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "best", "rng"} <= state.keys()
    assert {"python", "numpy", "torch", "cuda", "loader"} <= state["rng"][0].keys()  # one per rank

    log = (folder / "log").read_text()
    assert "epoch 1/3" in log and "epoch 3/3" in log and f"best epoch {statistic['metrics']['best']['epoch']}: {monitor}" in log
    assert "\r" not in log and "it/s" not in log  # progress bars stay on the terminal
    assert "epoch 3/3" in out and "__result__/demo/0" in out

    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    monitor_curve = monitor.replace("_", "/", 1)
    assert {"step/loss", "train/loss", monitor_curve} <= set(scalars)
    per_epoch = len(events.Scalars("step/loss")) // 3  # epoch scalars: at the global step
    every = statistic["hparams"].get("eval_every") or 0  # also every N steps (the vision task's)
    evaluated = sorted({per_epoch, 2 * per_epoch, 3 * per_epoch} | set(range(every, 3 * per_epoch, every or 1))
                       if every else {per_epoch, 2 * per_epoch, 3 * per_epoch})
    assert [e.step for e in events.Scalars(monitor_curve)] == evaluated
    # each step's point has the time of its step (for TensorBoard's Relative and Wall axes),
    # though an epoch's points are written together
    first_epoch = [e.wall_time for e in events.Scalars("step/loss")][:per_epoch]
    assert first_epoch == sorted(first_epoch)
    assert first_epoch[-1] - first_epoch[0] > statistic["durations"]["epoch_seconds"][0] / 2
    assert events.Tags()["graph"]

    # the run executed the tag's code, snapshotted into the experiment folder
    archive = subprocess.run(["git", "archive", "demo", "code"], cwd=project.path, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                assert (folder / member.name).read_bytes() == tar.extractfile(member).read()
    assert project.finished() == ["demo/0"]


def test_same_tag_again_is_next_id_and_fix_repeats_exactly(project):
    project.make("run", TAG="fixed", FIX="1")
    project.make("run", TAG="fixed", FIX="1")
    first, second = project.statistic("fixed", 0), project.statistic("fixed", 1)
    seed = int((project.path / "code" / "seed").read_text())
    assert first["seed"] == second["seed"] == seed and first["fix"] is True
    assert first["metrics"] == second["metrics"]
    assert project.finished() == ["fixed/0", "fixed/1"]
    project.make("run", TAG="fixed")
    assert project.statistic("fixed", 2)["seed"] != seed  # without FIX a fresh seed is drawn


@pytest.mark.filterwarnings("ignore")  # the tracer's own (deprecation; charlm's RNN), as in a run's log
@pytest.mark.parametrize("folder", [ROOT / "code", ROOT / "tests" / "tasks" / "charlm"], ids=["digits", "charlm"])
def test_the_graph_is_the_one_add_graph_draws(folder):
    """model_graph traces without torch.jit.trace's check (which slowed the training after it):
    the GraphDef and RunMetadata are still SummaryWriter.add_graph's, node for node."""
    from torch.utils.tensorboard._pytorch_graph import graph as add_graphs_graph

    sys.path[:0] = [str(folder), str(ROOT / "code")]
    try:
        for name in ("config", "model"):
            sys.modules.pop(name, None)
        import config
        import model
        from gitexp.record import model_graph
        net = model.build_model(config).eval()
        ours, theirs = model_graph(net, model.example_input()), add_graphs_graph(net, model.example_input())
    finally:
        del sys.path[:2]
        for name in ("config", "model"):
            sys.modules.pop(name, None)
    assert len(ours[0].node) > 3
    assert ours == theirs


def test_dirty_tree_is_refused_and_left_alone(project):
    config = project.path / "code" / "config.py"
    config.write_text(config.read_text() + "# my edit\n")
    (project.path / "notes.txt").write_text("untracked work\n")
    before = project.snapshot()
    assert_refused(project.make("run", TAG="dirty", check=False), "uncommitted changes", "code/config.py", "MSG=")
    assert project.snapshot() == before
    assert config.read_text().endswith("# my edit\n")


def test_a_venv_linked_to_another_environment_is_not_cleared(project, tmp_path):
    """make rebuilds .venv with --clear; where .venv is a link to a shared environment, that
    would clear the shared one, so it is refused and the environment left as it is."""
    shared = tmp_path / "shared-env"
    shared.mkdir()
    (shared / "installed-by-hand.txt").write_text("a package of the user's\n")
    (project.path / ".venv").symlink_to(shared)
    result = subprocess.run(["make", "ls"], cwd=project.path, env=project.env, capture_output=True, text=True,
                            timeout=120)
    assert_refused(result, ".venv is a link to another environment", "PYTHON=.venv/bin/python")
    assert [p.name for p in shared.iterdir()] == ["installed-by-hand.txt"]


def test_msg_commits_tracked_changes_only(project):
    config = project.path / "code" / "config.py"
    config.write_text(config.read_text() + "# my edit\n")
    (project.path / "notes.txt").write_text("untracked work\n")
    project.make("run", TAG="msg", MSG="try; a $(odd) `message`")
    assert project.git("log", "-1", "--format=%s") == "try; a $(odd) `message`"
    assert project.git("status", "--porcelain") == "?? notes.txt"
    assert project.statistic("msg", 0)["commit"] == project.git("rev-parse", "HEAD")


def test_tag_at_another_commit_is_refused(project):
    project.make("run", TAG="old")
    project.configure(epochs=2)
    before = project.snapshot()
    assert_refused(project.make("run", TAG="old", check=False), "tag old is at", "not at HEAD")
    assert project.snapshot() == before


def test_three_runs_started_at_once_get_ids_0_to_2(project):
    project.configure(epochs=1)
    project.side_by_side()
    runs = [project.start("run", TAG="race") for _ in range(3)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    assert sorted(project.statistic("race", i)["id"] for i in range(3)) == [0, 1, 2]
    assert sorted(project.finished()) == [f"race/{i}" for i in range(3)]
    assert not (project.path / "__result__" / "race" / "3").exists()


def test_statistic_json_is_valid_at_every_moment(project):
    project.configure(epochs=6)
    run = project.start("run", TAG="watch")
    path = project.path / "__result__" / "watch" / "0" / "statistic.json"
    reads, statuses = 0, set()
    while run.poll() is None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        finally:
            time.sleep(0.001)  # leave the run a core
        statuses.add(json.loads(text)["status"])  # raises on a half-written file
        reads += 1
    assert run.returncode == 0, run.stderr.read()
    assert reads > 20 and "running" in statuses
    assert project.statistic("watch", 0)["status"] == "finished"


def test_failed_run_says_failed_with_the_error_in_log(project):
    project.configure(lr=-1.0)
    result = project.make("run", TAG="broken", check=False)
    assert result.returncode != 0
    assert "failed" in result.stderr and "__result__/broken/0/log" in result.stderr
    assert project.statistic("broken", 0)["status"] == "failed"
    assert "Invalid learning rate" in (project.result("broken", 0) / "log").read_text()
    assert project.finished() == []


def test_keep_checkpoints_limits_epoch_files(project):
    project.configure(epochs=4, keep_checkpoints=1)
    project.make("run", TAG="keep", FIX="1")
    folder = project.result("keep", 0) / "checkpoint"
    best = os.readlink(folder / "epoch_best.pth")
    assert os.readlink(folder / "epoch_last.pth") == "epoch_4.pth"
    assert sorted(p.name for p in folder.glob("epoch_[0-9]*.pth")) == sorted({"epoch_4.pth", best})


def test_pickled_checkpoint_is_refused_on_load(project, tmp_path):
    project.make("run", TAG="safe")
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    planted = project.result("safe", 0) / "checkpoint" / "epoch_9.pth"
    torch.save({"model": Payload()}, planted)
    sys.path.insert(0, str(project.result("safe", 0) / "code"))
    try:
        from gitexp.checkpoint import load_checkpoint
        with pytest.raises(Exception, match="[Ww]eights only"):
            load_checkpoint(planted)
    finally:
        sys.path.pop(0)
    assert not marker.exists()


@pytest.mark.parametrize("variables, message", [
    ({}, "TAG is missing"),
    ({"TAG": "-x"}, "not a valid tag"),
    ({"TAG": "a..b"}, "not a valid tag"),
    ({"TAG": "x; touch pwned"}, "not a valid tag"),
    ({"TAG": "$(shell touch pwned)"}, "not a valid tag"),
    ({"TAG": "ok", "FIX": "yes"}, "FIX='yes' is not 0 or 1"),
    ({"TAG": "ok", "GPUS": "0;ls"}, "not a list of GPU indices"),
    ({"TAG": "ok", "GPUS": "0"}, "CUDA is not available"),
])
def test_bad_input_is_refused(project, variables, message):
    if variables.get("GPUS") == "0" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = project.snapshot()
    assert_refused(project.make("run", check=False, **variables), message)
    assert project.snapshot() == before
    assert not (project.path / "pwned").exists()
