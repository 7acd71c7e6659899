"""Fixtures: every test works in a throw-away copy of the template, never in this repository.

A pristine copy is built once per session and task: `git archive HEAD` into a temp folder,
the task's files over the researcher's (tests/tasks/<task>/, none for the example), a shorter
training in code/config.py, `git init`, one commit, the data prepared. Each test gets its own
copy of one (`project`: the example; `task_project`: each task in turn, for the guarantees that
must hold whatever the task), and runs make there with PYTHON= this interpreter, so no venv is
built, and with HOME pointing at an empty folder, so git has no user identity (as on a fresh
machine).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "code"))
from gitexp import schema  # noqa: E402  (the standard library only: no torch here)
TASKS_DIR = ROOT / "tests" / "tasks"
# every pristine copy is made of the commit the session began at, whatever is committed meanwhile
TESTED_COMMIT = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
# The test settings, in one place. "short": the training every copy starts with (tests check
# behaviour, not accuracy); "slow": epochs long enough that a kill lands where a test wants it.
# digits is the template's own example; charlm (tests/tasks/charlm/) a tiny character-level
# language model, loss only, with a per-step schedule and batches drawn from the global RNG;
# vision (tests/tasks/vision/) a DataLoader with workers and random augmentation, an EMA of the
# weights as extra state, evaluation every few steps. Its runs are the slowest (worker
# processes), so the guarantee tests run on it under the slow marker (make test-faults), and
# test_vision.py's chosen few in make test.
TASKS = {
    "digits": {"short": {"epochs": 3, "channels": 8, "hidden": 32}, "slow": {"epochs": 4, "channels": 32}},
    "charlm": {"short": {"epochs": 3, "steps_per_epoch": 10}, "slow": {"epochs": 4, "steps_per_epoch": 150}},
    "vision": {"short": {"epochs": 3}, "slow": {"epochs": 4}},
    "annealing": {"short": {"epochs": 3, "steps_per_epoch": 10}, "slow": {"epochs": 4, "steps_per_epoch": 100}},
    "gan": {"short": {"epochs": 3, "steps_per_epoch": 10}, "slow": {"epochs": 4, "steps_per_epoch": 100}},
    "stream": {"short": {"max_steps": 30, "eval_every": 10}, "slow": {"max_steps": 400, "eval_every": 100}},
}
SLOW_TASKS = {"vision"}
# annealing (word_language_model's shape: lr annealed after evaluation, early stopping) and gan
# (dcgan's: two optimizers, no monitor): the shapes of real scripts, tested by test_shapes.py
# alone; the guarantee tests' task_project does not take them
SHAPE_TASKS = {"annealing", "gan", "stream"}  # stream: nanoGPT's shape (max_steps), test_stream.py
TEST_IDENTITY = ["-c", "user.name=gitexp tests", "-c", "user.email=tests@localhost"]


def set_config(folder, **values):
    """Rewrite `name = value` lines of code/config.py (values given as Python source)."""
    path = Path(folder) / "code" / "config.py"
    text = path.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", text, flags=re.M)
        assert count == 1, f"config.py has no line for {name}"
    path.write_text(text)


class Project:
    """One throw-away copy of the template, set up for one task."""

    def __init__(self, path, home, task="digits"):
        self.path, self.task = Path(path), task
        self.slow = TASKS[task]["slow"]
        self.env = dict(os.environ, HOME=str(home), GIT_CONFIG_NOSYSTEM="1", PYTHONDONTWRITEBYTECODE="1")
        # as a user's shell would be: no git identity, and not inside `make test` (whose make
        # would make each make here a sub-make, with its own messages and flags)
        for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL",
                     "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"):
            self.env.pop(name, None)

    def make(self, *args, check=True, timeout=300, **variables):
        """Run make here; keyword arguments become VARIABLE=value. TB is off unless asked for."""
        variables.setdefault("TB", "0")
        command = ["make", *args, f"PYTHON={sys.executable}", *(f"{k}={v}" for k, v in variables.items())]
        result = subprocess.run(command, cwd=self.path, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def side_by_side(self):
        """Runs started together from here share the CPUs: one thread each (OMP_NUM_THREADS, which
        the thread policy takes and records), as a user gives them. Each start is a session of
        its own, and the kernel's autogroups then time-slice OpenMP's spinning threads ten times
        slower than what the test looks at."""
        self.env["OMP_NUM_THREADS"] = "1"

    def start(self, *args, **variables):
        """Start make in the background, in a process group of its own (to kill it whole)."""
        variables.setdefault("TB", "0")
        command = ["make", *args, f"PYTHON={sys.executable}", *(f"{k}={v}" for k, v in variables.items())]
        return subprocess.Popen(command, cwd=self.path, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def git(self, *args, check=True):
        result = subprocess.run(["git", *TEST_IDENTITY, *args], cwd=self.path, env=self.env,
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout.strip()

    def configure(self, message="change config", **values):
        set_config(self.path, **values)
        self.git("commit", "-qam", message)

    def monitor(self, tag, number):
        """The run's monitored metric, e.g. val_acc, as its hparams say."""
        return self.statistic(tag, number)["hparams"]["monitor"]

    def result(self, tag, number):
        return self.path / "__result__" / tag / str(number)

    def statistic(self, tag, number):
        """A run's statistic.json, checked against gitexp/schema.py: every record a test reads."""
        statistic = json.loads((self.result(tag, number) / "statistic.json").read_text())
        assert schema.problems(statistic) == [], f"{tag}/{number}'s statistic.json: {schema.problems(statistic)}"
        return statistic

    def finished(self):
        path = self.path / "__statistic__" / "exper-list" / "finished.txt"
        return path.read_text().splitlines() if path.exists() else []

    def snapshot(self):
        """Every file's path, size and mtime (and every link's target) outside .git and the
        derived __statistic__/.deps/ (what make title, table and ls keep to be fast, kept up to
        date as files change): to show that a refused command changed nothing."""
        state = {}
        for path in sorted(self.path.rglob("*")):
            if path.relative_to(self.path).parts[:1] == (".git",) or \
                    path.relative_to(self.path).parts[:2] == ("__statistic__", ".deps"):
                continue
            if path.is_symlink():
                state[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                stat = path.stat()
                state[str(path)] = (stat.st_size, stat.st_mtime_ns)
            else:
                state[str(path)] = "dir"
        state["refs"] = self.git("show-ref", check=False)
        state["status"] = self.git("status", "--porcelain", "--untracked-files=all")
        return state


def wait_for(condition, timeout=120, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {condition}")


def process_tree(pid):
    """pid and every process under it (make, the launcher, main.py or torchrun and its ranks,
    their DataLoader workers, forked or spawned), from /proc."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def assert_refused(result, *fragments):
    """A user's mistake: non-zero exit, one `error:` line naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout
    ours = [line for line in result.stderr.splitlines() if not re.match(r"make(\[[0-9]+\])?: \*\*\*", line)]
    assert len(ours) == 1 and ours[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in ours[0], ours[0]


def build_pristine(base, task):
    folder, home = base / "project", base / "home"
    folder.mkdir()
    home.mkdir()
    archive = subprocess.run(["git", "archive", TESTED_COMMIT], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    if (TASKS_DIR / task).is_dir():
        for path in (TASKS_DIR / task).iterdir():
            shutil.copy(path, folder / "code" / path.name)
    set_config(folder, **TASKS[task]["short"])
    project = Project(folder, home, task)
    project.git("init", "-q", "-b", "main")
    project.git("add", "-A")
    project.git("commit", "-qm", "template")
    project.make("data")
    return folder


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    return build_pristine(tmp_path_factory.mktemp("pristine"), "digits")


def pristine_fixture(task):
    """The session's pristine copy for `task`, as the fixture pristine_<task>."""
    @pytest.fixture(scope="session", name=f"pristine_{task}")
    def built(tmp_path_factory):
        return build_pristine(tmp_path_factory.mktemp(f"pristine-{task}"), task)
    return built


pristine_charlm, pristine_vision, pristine_annealing, pristine_gan, pristine_stream = (
    pristine_fixture(task) for task in ("charlm", "vision", "annealing", "gan", "stream"))


def pristine_of(request, task):
    return request.getfixturevalue("pristine" if task == "digits" else f"pristine_{task}")


def copy_project(source, base, task="digits"):
    """A copy of the project at `source` in base/project, with an empty base/home."""
    (base / "home").mkdir()
    shutil.copytree(source, base / "project", symlinks=True)
    return Project(base / "project", base / "home", task)


@pytest.fixture
def project(pristine, tmp_path):
    return copy_project(pristine, tmp_path)


# each task, the slow ones under the slow mark (make test-faults runs them)
TASK_PARAMS = [pytest.param(task, marks=pytest.mark.slow) if task in SLOW_TASKS else task for task in TASKS
               if task not in SHAPE_TASKS]
# the heavy tests (kills, two processes: tens of seconds a task): the example in make test, every
# task in make test-faults, for make test's budget of 20 minutes on 2 cores. Use:
# @pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True), or
# params=HEAVY_TASK_PARAMS for a fixture of its own.
HEAVY_TASK_PARAMS = [task if task == "digits" else pytest.param(task, marks=pytest.mark.slow) for task in TASKS
                     if task not in SHAPE_TASKS]


@pytest.fixture(params=TASK_PARAMS)
def task_project(request, tmp_path):
    """A copy for each task in turn: the guarantees must hold whatever the task."""
    return copy_project(pristine_of(request, request.param), tmp_path, request.param)
