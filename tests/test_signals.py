"""Stopped means stopped (issue 34): whichever way a signal comes (to make, to the launcher, to
the process group, to every process, DataLoader workers included, forked or spawned), every
rank finishes its step, checkpoints, and the run is `stopped`, in one line, continuable; a worker
the signal reaches is never the run's error; a SIGKILLed run's workers end with it. Each leg of a
run is recorded; a continue leaves one point per curve and step on disk; a rerun that differs
says at which step, and names a continue just before it."""
import os
import signal
import time

import pytest

from conftest import copy_project, kill_group, process_tree, wait_for
from test_contract import edit

SPAWN = ("generator=generator, num_workers=cfg.num_workers)",
         "generator=generator, num_workers=cfg.num_workers, multiprocessing_context='spawn', persistent_workers=True)")


@pytest.fixture
def vision(pristine_vision, tmp_path):
    project = copy_project(pristine_vision, tmp_path, "vision")
    project.configure(epochs=10)  # time for a signal after the first checkpoint (eval_every = 7)
    return project


def launcher_of(make_pid):
    return next(pid for pid in process_tree(make_pid)[1:]
                if b"scripts/experiment.py" in open(f"/proc/{pid}/cmdline", "rb").read())


def signalled(project, route, tag="sig", **variables):
    """Start `make run TAG=tag`, send `route`'s signal after its first checkpoint: (make's exit
    status, its stdout, its stderr, seconds from the signal to make's exit)."""
    run = project.start("run", TAG=tag, FIX="1", **variables)
    folder = project.result(tag, 0) / "checkpoint"
    wait_for(lambda: any(folder.glob("*.pth")) if folder.is_dir() else run.poll() is not None, interval=0.001)
    time.sleep(0.2)  # the workers of the next batches are up
    assert run.poll() is None, "the run ended before the signal"
    sent = time.monotonic()
    if route == "every process":  # what scancel, systemd or a killall does
        for pid in process_tree(run.pid):
            os.kill(pid, signal.SIGTERM)
    elif route == "make":
        os.kill(run.pid, signal.SIGTERM)
    elif route == "launcher":
        os.kill(launcher_of(run.pid), signal.SIGTERM)
    elif route == "group, Ctrl+C":
        os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=120)
    return run.returncode, out, err, time.monotonic() - sent


def assert_stopped(project, status, out, err, tag="sig"):
    """Stopped: one line says so and from which step; no traceback, no worker's death."""
    statistic = project.statistic(tag, 0)
    assert status != 0 and statistic["status"] == "stopped" and "error" not in statistic, out + err
    assert "Traceback" not in out + err and "killed by signal" not in out + err, out + err
    said = [line for line in (out + err).splitlines() if line.startswith("stopped: ")]
    assert len(said) == 1 and said[0].endswith(f"goes on from step {statistic['step']}"), out + err
    assert statistic["legs"][-1]["ended"] == "stopped"


@pytest.mark.parametrize("route", ["every process", "make", "launcher",
                                   "group, Ctrl+C"])
def test_a_signal_stops_a_run_whose_loader_has_workers(vision, route):
    status, out, err, _ = signalled(vision, route)
    assert_stopped(vision, status, out, err)
    assert not [pid for pid in process_tree(os.getpid()) if b"__result__/sig/" in open(f"/proc/{pid}/cmdline", "rb").read()]
    if route == "every process":
        vision.make("run", TAG="whole", FIX="1")
        result = vision.make("continue", TAG="sig")
        statistic = vision.statistic("sig", 0)
        assert statistic["metrics"] == vision.statistic("whole", 0)["metrics"] and "error" not in statistic
        assert [leg["how"] for leg in statistic["legs"]] == ["run", "continue"]
        assert [leg["ended"] for leg in statistic["legs"]] == ["stopped", "finished"]
        assert statistic["legs"][1]["from_step"] > 0
        assert "continued 1x" in vision.make("ls", TAG="sig").stdout
        assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["two processes",
                                     "spawned, persistent workers"])
def test_sigterm_to_every_process_stops_every_variant(vision, variant):
    variables = {"NPROC": "2"} if variant == "two processes" else {}
    if variant.startswith("spawned"):
        edit(vision, "data.py", SPAWN)
        vision.git("commit", "-qam", "spawned workers")
    status, out, err, _ = signalled(vision, "every process", **variables)
    assert_stopped(vision, status, out, err)
    assert "ChildFailedError" not in err


def test_the_workers_of_a_killed_run_end_with_it(vision):
    run = vision.start("run", TAG="k", FIX="1")
    folder = vision.result("k", 0) / "checkpoint"
    wait_for(lambda: any(folder.glob("*.pth")) if folder.is_dir() else run.poll() is not None, interval=0.001)
    time.sleep(0.2)
    everything = process_tree(run.pid)
    assert len(everything) >= 5  # make, the launcher, main.py, two workers
    kill_group(run)
    time.sleep(1)
    left = [pid for pid in everything if os.path.exists(f"/proc/{pid}") and
            open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert left == [], left
    result = vision.make("continue", TAG="k")
    legs = vision.statistic("k", 0)["legs"]
    assert [leg["ended"] for leg in legs] == ["killed", "finished"] and "Traceback" not in result.stdout


def test_a_continue_leaves_one_point_per_curve_and_step(tmp_path):
    from gitexp.events import EventFile, drop_past, scalars  # code/ is on the path (conftest)
    folder = tmp_path / "tensorboard"
    first = EventFile(folder)
    for step in range(1, 11):
        first.scalars(step, [("step/loss", float(step))])
    first.close()
    with open(next(folder.glob("events.*")), "ab") as torn:
        torn.write(b"\x10\x00\x00")  # a record a kill cut short
    drop_past(folder, 6)  # the continue goes on from step 6
    second = EventFile(folder, purge_step=7)
    for step in range(7, 13):
        second.scalars(step, [("step/loss", 100.0 + step)])
    second.close()
    points = scalars(folder)
    assert sorted(step for _, step in points) == list(range(1, 13))
    assert points["step/loss", 6] == 6.0 and points["step/loss", 7] == 107.0
    events = [p.read_bytes() for p in sorted(folder.glob("events.*"))]
    assert not events[0].endswith(b"\x10\x00\x00")


def test_a_rerun_that_differs_says_where_and_names_the_continue(project):
    # an lr kept in a module global, halved every 20 steps: a continue starts it again
    edit(project, "task.py", ("def train_step(model, batch, optimizer, device):\n",
                              "CALLS = [0]\n\n\ndef train_step(model, batch, optimizer, device):\n"
                              "    CALLS[0] += 1\n    optimizer.param_groups[0]['lr'] = 0.002 * 0.5 ** (CALLS[0] // 20)\n"))
    project.git("commit", "-qam", "an lr outside the checkpoint")
    run = project.start("run", TAG="hidden", FIX="1")
    folder = project.result("hidden", 0) / "checkpoint"
    wait_for(lambda: (folder / "epoch_1.pth").exists() or run.poll() is not None, interval=0.001)
    kill_group(run)
    project.make("continue", TAG="hidden")
    continued = project.statistic("hidden", 0)["legs"][1]["from_step"]
    result = project.make("rerun", TAG="hidden").stdout
    assert f"their step curves first differ at step {continued + 1} (step/lr " in result, result
    assert f"hidden/0 was continued from step {continued}, right before it: the likely cause is a state its " \
           "checkpoint lacks, which make check finds" in result, result
    diff = project.make("diff", A="hidden/0", B="hidden/1").stdout
    assert f"their step curves first differ at step {continued + 1}" in diff, diff
