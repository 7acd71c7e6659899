"""make sweep (issue 12): a grid of configs and seeds, each point pinned to its own tag, run
concurrently, resumable; and make more, another seed of an existing tag."""
import json
import os
import signal

import pytest

from conftest import assert_refused, wait_for


def sweep_file(project, name, text, commit=True):
    path = project.path / "code" / "sweeps" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    if commit:
        project.git("add", str(path))
        project.git("commit", "-qm", f"sweep {name}")


def experiments(project, prefix):
    """{(tag, sweep_run): [(id, statistic)]} of every experiment whose tag starts with prefix-."""
    found = {}
    for folder in sorted((project.path / "__result__").glob(f"{prefix}-*/*/statistic.json")):
        statistic = json.loads(folder.read_text())
        found.setdefault((statistic["tag"], statistic["sweep_run"]), []).append((statistic["id"], statistic))
    return found


def by_point(project, prefix):
    """{(point values, sweep_run): metrics} of the finished runs."""
    return {(json.dumps(s["point"], sort_keys=True), k): s["metrics"]
            for (_, k), runs in experiments(project, prefix).items() for _, s in runs if s["status"] == "finished"}


def user_state(project):
    return (project.git("rev-parse", "HEAD"), project.git("symbolic-ref", "HEAD"),
            project.git("status", "--porcelain", "--untracked-files=all"),
            (project.path / "notes.txt").read_text(), project.git("diff", "--cached"))


def test_a_grid_pins_each_point_and_runs_every_seed(project):
    project.configure(epochs=1)
    sweep_file(project, "g", "lr = [0.002, 0.004]\nlr_step = [1, 2]  # a comment\nruns_per_point = 2\n")
    sweep_file(project, "h", (project.path / "code" / "sweeps" / "g.py").read_text())
    (project.path / "notes.txt").write_text("untracked work\n")
    before = user_state(project)
    head = project.git("rev-parse", "HEAD")
    out = project.make("sweep", NAME="g", JOBS="2", FIX="1", timeout=600).stdout
    assert "all 8 runs finished" in out
    assert user_state(project) == before  # branch, HEAD, index, working tree, untracked files
    found = experiments(project, "g")
    tags = sorted({tag for tag, _ in found})
    assert tags == ["g-lr0.002-lr_step1", "g-lr0.002-lr_step2", "g-lr0.004-lr_step1", "g-lr0.004-lr_step2"]
    seed = int((project.path / "code" / "seed").read_text())
    for (tag, k), runs in found.items():
        ((number, statistic),) = runs
        assert statistic["status"] == "finished" and statistic["sweep"] == "g" and statistic["seed"] == seed + k
        assert statistic["hparams"]["lr"] == statistic["point"]["lr"]
        assert statistic["hparams"]["lr_step"] == statistic["point"]["lr_step"]
        # the point's commit: HEAD's tree with only config.py changed, on no branch
        assert project.git("rev-parse", f"{tag}^{{commit}}^") == head
        assert project.git("diff", "--name-only", head, tag) == "code/config.py"
        assert project.git("branch", "--contains", tag) == ""
    config = project.git("show", "g-lr0.004-lr_step2:code/config.py")
    assert "\nlr = 0.004\n" in config and "\nlr_step = 2  # StepLR: multiply lr" in config  # comments kept
    rows = project.make("ls", TAG="g-lr0.004-lr_step1").stdout.splitlines()
    assert len(rows) == 3 and all("finished" in row for row in rows[1:])
    out = project.make("table", LIST="g", CHANGED="1").stdout.splitlines()
    table = out[[row.split()[:1] for row in out].index(["exper"]):]
    assert table[0].split()[:4] == ["exper", "hparams.lr", "hparams.lr_step", "run.seed"], table[0]
    assert len([row for row in table if row.startswith("g-")]) == 8
    summary = project.path / "__statistic__" / "table" / "g.summary.csv"
    assert len(summary.read_text().splitlines()) == 5  # a row a point, with mean and std

    # FIX=1: the same grid again is the same numbers, point by point and seed by seed
    project.make("sweep", NAME="h", JOBS="2", FIX="1", timeout=600)
    first, second = by_point(project, "g"), by_point(project, "h")
    assert len(first) == 8 and first == second

    # run again: nothing to do, nothing touched
    state = project.snapshot()
    assert "all 8 runs finished" in project.make("sweep", NAME="g", JOBS="2", FIX="1").stdout
    assert {k: v for k, v in project.snapshot().items() if "__statistic__" not in k} == \
        {k: v for k, v in state.items() if "__statistic__" not in k}


def test_new_values_add_only_their_points_and_changed_code_is_refused(project):
    project.configure(epochs=1)
    sweep_file(project, "g", "lr = [0.002]\n")
    project.make("sweep", NAME="g")
    first = project.statistic("g-lr0.002", 0)
    sweep_file(project, "g", "lr = [0.002, 0.004]\n")
    assert "all 2 runs finished" in project.make("sweep", NAME="g").stdout
    assert project.statistic("g-lr0.002", 0) == first and project.statistic("g-lr0.004", 0)["status"] == "finished"
    assert not project.result("g-lr0.002", 1).exists()

    project.configure(dropout=0.5)  # code every point shares changed: its old tags would mix versions
    before = project.snapshot()
    assert_refused(project.make("sweep", NAME="g", check=False), "tag g-lr0.002 holds other code", "NAME=g2")
    assert project.snapshot() == before


def test_a_failing_point_does_not_stop_the_others(project):
    project.configure(epochs=1)
    sweep_file(project, "bad", "lr = [-1.0, 0.002]\n")
    result = project.make("sweep", NAME="bad", JOBS="2", check=False)
    assert result.returncode != 0
    assert "__result__/bad-lr-1.0/0/log" in result.stdout and "1 of 2 runs did not finish" in result.stdout
    assert project.statistic("bad-lr-1.0", 0)["status"] == "failed"
    assert project.statistic("bad-lr0.002", 0)["status"] == "finished"
    project.make("sweep", NAME="bad", JOBS="2", check=False)  # the failed run again, as a new id
    assert project.statistic("bad-lr-1.0", 1)["status"] == "failed"
    assert project.statistic("bad-lr-1.0", 0)["status"] == "failed"  # still recorded
    assert not project.result("bad-lr0.002", 1).exists()


def kill_midway(project, name, signal_number):
    """Start sweep `name` and send its process group `signal_number` once one run has finished
    and another has written a checkpoint; returns the finished runs' files and mtimes."""
    sweep = project.start("sweep", NAME=name, JOBS="2", FIX="1")

    def midway():
        found = [s for runs in experiments(project, name).values() for _, s in runs]
        finished = [s for s in found if s["status"] == "finished"]
        return finished and len(finished) < len(found) or sweep.poll() is not None
    wait_for(midway, timeout=300, interval=0.01)
    assert sweep.poll() is None, "the sweep ended before it could be stopped midway"
    os.killpg(sweep.pid, signal_number)
    sweep.wait(timeout=120)
    finished = {}
    for runs in experiments(project, name).values():
        for number, statistic in runs:
            if statistic["status"] == "finished":
                folder = project.result(statistic["tag"], number)
                finished.update({str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()})
    return finished


@pytest.mark.parametrize("signal_number", [pytest.param(signal.SIGKILL, marks=pytest.mark.slow), signal.SIGINT],
                         ids=["SIGKILL", "Ctrl+C"])
def test_a_stopped_sweep_goes_on_and_ends_as_an_uninterrupted_one(project, signal_number):
    project.configure(**project.slow)
    sweep_file(project, "whole", "lr = [0.002, 0.004]\nruns_per_point = 2\n")
    sweep_file(project, "cut", "lr = [0.002, 0.004]\nruns_per_point = 2\n")
    project.make("sweep", NAME="whole", JOBS="2", FIX="1", timeout=600)
    finished = kill_midway(project, "cut", signal_number)
    assert finished
    statuses = {s["status"] for runs in experiments(project, "cut").values() for _, s in runs}
    assert statuses - {"finished"} <= ({"running"} if signal_number == signal.SIGKILL else {"stopped"})
    assert "all 4 runs finished" in project.make("sweep", NAME="cut", JOBS="2", FIX="1", timeout=600).stdout
    for path, mtime in finished.items():  # finished runs untouched
        assert os.stat(path).st_mtime_ns == mtime, path
    found = experiments(project, "cut")
    assert len(found) == 4 and all(len(runs) == 1 for runs in found.values())  # no run twice
    assert by_point(project, "cut") == by_point(project, "whole")


@pytest.mark.slow  # make test-faults: concurrency of whole sweeps (one run's atomic id is make test's)
def test_two_sweeps_of_one_name_at_once_never_run_a_run_twice(project):
    project.configure(epochs=1)
    sweep_file(project, "g", "lr = [0.002, 0.004]\nruns_per_point = 2\n")
    sweeps = [project.start("sweep", NAME="g") for _ in range(2)]
    for sweep in sweeps:
        sweep.wait(timeout=600)
    found = experiments(project, "g")
    assert len(found) == 4 and all(len(runs) == 1 for runs in found.values()), found.keys()
    assert all(runs[0][1]["status"] == "finished" for runs in found.values())


@pytest.mark.parametrize("text, variables, message", [
    ("lr = [0.1]\n", {}, "NAME is missing"),
    ("lr = [0.1]\n", {"NAME": "../x"}, "is not a sweep name"),
    ("lr = [0.1]\n", {"NAME": "nope"}, "there is no committed code/sweeps/nope.py"),
    ("lr = 0.1\n", {"NAME": "s"}, "code/sweeps/s.py line 1: lr = 0.1 must be a non-empty list"),
    ("lr = []\n", {"NAME": "s"}, "must be a non-empty list"),
    ("lr = [0.1, 0.1]\n", {"NAME": "s"}, "lists a value twice"),
    ("lr = [0.1]\nfoo = [1]\n", {"NAME": "s"}, "line 2: foo is not a name of code/config.py"),
    ("lr = [0.1]\nruns_per_point = 0\n", {"NAME": "s"}, "runs_per_point = 0 must be a whole number"),
    ("lr = [0.1\n", {"NAME": "s"}, "code/sweeps/s.py line 1: not Python"),
    ("import os\n", {"NAME": "s"}, "line 1: only `name = [value, ...]` lines"),
    ("lr = [open('x')]\n", {"NAME": "s"}, "is not a Python literal"),
    ("lr = [0.1]\n", {"NAME": "s", "JOBS": "0"}, "JOBS=0 is out of range"),
    ("lr = [0.1]\n", {"NAME": "s", "JOBS": "2", "GPUS": "0"}, "GPUS and JOBS were both given"),
    ("lr = [0.1]\n", {"NAME": "s", "NPROC": "2"}, "NPROC is not for make sweep"),
    ("lr = [0.1]\n", {"NAME": "s", "FIX": "yes"}, "FIX='yes' is not 0 or 1"),
])
def test_bad_sweeps_are_refused_and_change_nothing(project, text, variables, message):
    sweep_file(project, "s", text)
    before = project.snapshot()
    assert_refused(project.make("sweep", check=False, **variables), message)
    assert project.snapshot() == before


def test_an_uncommitted_sweep_is_refused(project):
    sweep_file(project, "s", "lr = [0.1]\n", commit=False)
    before = project.snapshot()
    assert_refused(project.make("sweep", NAME="s", check=False), "no committed code/sweeps/s.py")
    sweep_file(project, "s", "lr = [0.1]\n")
    sweep_file(project, "s", "lr = [0.2]\n", commit=False)
    before = project.snapshot()
    assert_refused(project.make("sweep", NAME="s", check=False), "uncommitted changes", "code/sweeps/s.py")
    assert project.snapshot() == before


def test_make_more_adds_a_run_to_an_old_tag_without_moving_head(project):
    project.make("run", TAG="old", FIX="1")
    project.configure(epochs=2)
    head = project.git("rev-parse", "HEAD")
    project.make("more", TAG="old", FIX="1")
    project.make("more", TAG="old")
    first, second, third = (project.statistic("old", n) for n in range(3))
    assert first["commit"] == second["commit"] == third["commit"] != head
    assert project.git("rev-parse", "HEAD") == head
    assert second["metrics"] == first["metrics"] and second["hparams"]["epochs"] == 3
    assert third["seed"] != first["seed"] and third["fix"] is False
    assert_refused(project.make("more", TAG="nope", check=False), "unknown tag nope")
