"""Working with many experiments (issue 13): make diff, make rm / restore / empty-trash, and warm
starts with init_from."""
import fcntl
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import HEAVY_TASK_PARAMS, assert_refused


def tree_state(folder):
    """Every file's bytes, mode and mtime, and every link's target, under folder."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            state[key] = ("link", os.readlink(path))
        elif path.is_file():
            stat = path.stat()
            state[key] = (path.read_bytes(), stat.st_mode, stat.st_mtime_ns)
    return state


# ---- make diff --------------------------------------------------------------------------------

def test_diff_of_two_tags_shows_the_hparam_the_metrics_and_the_config_line(project):
    project.make("run", TAG="a", FIX="1")
    project.configure(lr=0.004)
    project.make("run", TAG="b", FIX="1")
    out = project.make("diff", A="a/0", B="b/0").stdout
    assert "hparams that differ:" in out and "hparams.lr" in out and "0.002" in out and "0.004" in out
    monitor = project.monitor("a", 0)
    a, b = (project.statistic(t, 0)["metrics"]["best"][monitor] for t in "ab")
    line = next(row for row in out.splitlines() if row.split()[:1] == [f"metrics.best.{monitor}"])
    assert line.split()[1:] == [f"{a:.6g}", f"{b:.6g}", f"{b - a:+.6g}"]
    assert "code/config.py | 2 +-" in out
    full = project.make("diff", A="a/0", B="b/0", FULL="1").stdout
    assert "-lr = 0.002" in full and "+lr = 0.004" in full


def test_diff_of_two_ids_of_one_tag_shows_the_seed_and_no_code_change(project):
    project.make("run", TAG="a")
    project.make("run", TAG="a")
    out = project.make("diff", A="a/0", B="a/1").stdout
    seeds = [str(project.statistic("a", n)["seed"]) for n in (0, 1)]
    assert "hparams: the same" in out
    seed_line = next(row for row in out.splitlines() if row.split()[:1] == ["seed"])
    assert seed_line.split()[1:] == seeds
    assert "code: the same commit" in out


def test_diff_of_a_bare_tag_is_its_mean(project):
    project.make("run", TAG="a")
    project.make("run", TAG="a")
    project.make("run", TAG="b", FIX="1")
    out = project.make("diff", A="a", B="b/0").stdout
    assert "A = a (mean of 2 distinct runs)" in out
    monitor = project.monitor("a", 0)
    mean = sum(project.statistic("a", n)["metrics"]["best"][monitor] for n in (0, 1)) / 2
    line = next(row for row in out.splitlines() if row.split()[:1] == [f"metrics.best.{monitor}"])
    assert line.split()[1] == f"{mean:.6g}"


DIFF_BAD = [
    ({"A": "a/0", "B": "a/0"}, "A and B are both a/0"),
    ({"A": "a/0", "B": "nope/0"}, "B: there is no experiment nope/0"),
    ({"A": "a/9", "B": "a/0"}, "A: there is no experiment a/9"),
    ({"A": "a/0"}, "B is missing"),
    ({"A": "a/0", "B": "../x"}, "is not tag/id or tag"),
    ({"A": "nope", "B": "a/0"}, "tag nope has no finished experiment"),
]


def test_diff_bad_input(project):
    project.make("run", TAG="a")
    for variables, message in DIFF_BAD:  # one project for every case: each run costs seconds
        before = project.snapshot()
        assert_refused(project.make("diff", check=False, **variables), message)
        assert project.snapshot() == before, variables



# ---- make rm, restore, empty-trash ------------------------------------------------------------

def test_rm_then_restore_gives_back_every_byte_link_and_list_line(project):
    for tag in ("a", "a", "b", "c"):
        project.make("run", TAG=tag)
    results = project.path / "__result__"
    before, lines = tree_state(results), project.finished()
    out = project.make("rm", EXP="a/1 b").stdout
    assert "moved 2 experiment(s)" in out and "git tag" in out and "stay" in out
    assert not project.result("a", 1).exists() and not project.result("b", 0).exists()
    assert project.finished() == ["a/0", "c/0"]
    assert project.git("tag", "-l", "b") == "b"  # the tag stays
    assert not re.search(r"^b\s", project.make("ls").stdout, re.M)  # no line of tag b
    project.make("restore", EXP="b a/1")
    assert tree_state(results) == before and project.finished() == lines


@pytest.mark.parametrize("case", ["running", "in a list", "a start of another"])
def test_rm_refusals_move_nothing(project, case):
    project.make("run", TAG="a")
    message = ""
    if case == "running":
        held = open(project.result("a", 0) / ".lock", "a")
        fcntl.flock(held, fcntl.LOCK_EX)  # as a live run holds it
        message = "a/0 is running"
    elif case == "in a list":
        project.make("record", EXP="a/0", LIST="paper")
        message = "named in your list(s) paper (a/0)"
    else:
        project.configure(init_from="a/0")
        project.make("run", TAG="warm")
        message = "a/0 is where warm/0 started from (init_from)"
    before = project.snapshot()
    assert_refused(project.make("rm", EXP="a", check=False), message)
    assert project.snapshot() == before


def test_empty_trash_asks_and_deletes_only_when_told(project):
    project.make("run", TAG="a")
    project.make("rm", EXP="a/0")
    before = project.snapshot()
    no_terminal = subprocess.run(["make", "empty-trash", f"PYTHON={sys.executable}"], cwd=project.path,
                                 env=project.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert_refused(no_terminal, "nothing deleted", "YES=1")
    assert "a/0" in no_terminal.stdout  # it listed what it would delete
    assert project.snapshot() == before
    assert "deleted 1 experiment(s) for good" in project.make("empty-trash", YES="1").stdout
    assert not (project.path / "__result__" / ".trash").exists()
    assert_refused(project.make("restore", EXP="a/0", check=False), "there is no experiment a/0")


# ---- init_from --------------------------------------------------------------------------------

@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
def test_init_resume_extends_a_run_bit_for_bit(task_project):
    """A FIX=1 4-epoch run extended to 6 equals a 6-epoch run from scratch (the example's StepLR
    does not depend on epochs; charlm's cosine does, and the run says so)."""
    project = task_project
    project.configure(epochs=4)
    project.make("run", TAG="four", FIX="1")
    project.configure(epochs=6)
    project.make("run", TAG="six", FIX="1")
    if project.task == "digits":
        project.configure(init_from="four/0@last", init_resume=True)
    else:  # the fixture's config.py has no such lines: the loop's defaults hold until they are added
        config = project.path / "code" / "config.py"
        config.write_text(config.read_text() + 'init_from = "four/0@last"\ninit_resume = True\n')
        project.git("commit", "-qam", "extend four/0")
    out = project.make("run", TAG="ext", FIX="1").stdout
    assert "starting from four/0, epoch 4: its whole training state (init_resume)" in out
    assert "ran with epochs = 4, this run goes on to epochs = 6" in out
    ext = project.statistic("ext", 0)
    assert ext["init_from"]["experiment"] == "four/0" and ext["init_from"]["epoch"] == 4
    if project.task == "digits":
        assert ext["metrics"] == project.statistic("six", 0)["metrics"]
        final = torch.load(project.result("ext", 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
        reference = torch.load(project.result("six", 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
        for name, tensor in reference["model"].items():
            assert torch.equal(final["model"][name], tensor), name
    else:
        assert ext["epoch"] == 6 and ext["status"] == "finished"


def test_init_from_alone_reproduces_under_rerun_and_refuses_a_changed_source(project):
    project.make("run", TAG="src", FIX="1")
    project.configure(init_from="src/0", init_skip=["classifier.4"])
    out = project.make("run", TAG="tune", FIX="1").stdout
    best = os.readlink(project.result("src", 0) / "checkpoint" / "epoch_best.pth")
    assert f"starting from src/0, epoch {best[6:-4]}: its weights" in out
    tuned = project.statistic("tune", 0)
    assert tuned["init_from"]["sha256"] and tuned["metrics"]["best"]["epoch"] >= 1
    assert "metrics equal to tune/0" in project.make("rerun", TAG="tune").stdout

    source = project.result("src", 0) / "checkpoint" / best
    source.write_bytes(source.read_bytes() + b"\0")  # the source's checkpoint is not what it was
    before = project.snapshot()
    assert_refused(project.make("rerun", TAG="tune", check=False), "changed since the original run started from it")
    assert project.snapshot() == before
    source.unlink()
    before = project.snapshot()
    assert_refused(project.make("rerun", TAG="tune", check=False), f"there is no __result__/src/0/checkpoint/{best}")
    assert project.snapshot() == before


INIT_FROM_BAD = [
    ("nope/0", "there is no experiment nope/0"),
    ("src", "is not \"tag/id\""),
    ("src/0@soon", "is not \"tag/id\""),
    ("src/0@99", "there is no __result__/src/0/checkpoint/epoch_99.pth (kept there: epoch_1.pth, epoch_2.pth, epoch_3.pth)"),
    ("wide/0", "parameter features.0.weight is (16, 1, 3, 3) there and (8, 1, 3, 3) here"),
]


def test_init_from_bad_input_writes_nothing(project):
    project.make("run", TAG="src")
    project.configure(channels=16)
    project.make("run", TAG="wide")
    for value, message in INIT_FROM_BAD:  # one pair of source runs for every case: each run costs seconds
        project.configure(channels=8, init_from=value)
        before = project.snapshot()
        assert_refused(project.make("run", TAG="warm", check=False), message)
        assert project.snapshot() == before, value
        assert project.git("tag", "-l", "warm") == "", value
