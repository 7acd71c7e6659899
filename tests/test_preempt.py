"""Preemption (issue 14): checkpoints every N steps, exact resume inside an epoch, signals that
stop a run cleanly, and the Slurm script's requeue logic."""
import os
import sys
import random
import signal
import subprocess
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import HEAVY_TASK_PARAMS, kill_group, wait_for
from test_continue import assert_same_state

EVERY = 5


def newest_position(folder):
    """(epochs done, steps into the next) of the newest checkpoint file, or (0, 0)."""
    best = (0, 0)
    for path in (folder / "checkpoint").glob("*.pth") if (folder / "checkpoint").is_dir() else []:
        parts = path.stem.split("_")
        if path.is_symlink() or parts[-1] in ("last", "best"):
            continue
        position = (int(parts[1]), 0) if parts[0] == "epoch" else (int(parts[1]), int(parts[2]))
        best = max(best, position)
    return best


def curves(folder):
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same_run(project, tag, reference="whole"):
    assert project.statistic(tag, 0)["status"] == "finished"
    assert project.statistic(tag, 0)["metrics"] == project.statistic(reference, 0)["metrics"]
    final = torch.load(project.result(tag, 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
    assert_same_state(final, torch.load(project.result(reference, 0) / "checkpoint" / "epoch_last.pth",
                                        weights_only=True))
    assert curves(project.result(tag, 0)) == curves(project.result(reference, 0))


def kill_at_random_steps(project, kills, seed, **variables):
    """Run FIX=1 tag `cut` and SIGKILL it `kills` times, each at a random moment after a newer
    step checkpoint than the last kill's; then continue it to the end."""
    rng = random.Random(seed)
    folder = project.result("cut", 0)
    run, killed = project.start("run", TAG="cut", FIX="1", **variables), 0
    last = (0, 0)
    while killed < kills:
        wait_for(lambda: newest_position(folder) > last or run.poll() is not None, timeout=300, interval=0.001)
        time.sleep(rng.uniform(0, 0.05))
        if run.poll() is not None:
            break  # the run ended first: this many kills are enough
        kill_group(run)
        killed, last = killed + 1, newest_position(folder)
        run = project.start("continue", TAG="cut", **variables)
    assert run.wait(timeout=300) == 0, run.stderr.read()
    return killed


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
# make test-faults: test_continue's kills at checkpoints and inside epochs are make test's
@pytest.mark.parametrize("kills", [pytest.param(3, id="3-kills", marks=pytest.mark.slow),
                                   pytest.param(10, id="10-kills", marks=pytest.mark.slow)])
def test_killed_at_random_steps_continues_exactly(task_project, kills):
    project = task_project
    project.configure(**project.slow)
    if project.task == "digits":
        project.configure(checkpoint_every=EVERY)
    else:
        append_config(project, checkpoint_every=EVERY)
    project.make("run", TAG="whole", FIX="1")
    assert kill_at_random_steps(project, kills, seed=kills) >= min(kills, 3)
    assert_same_run(project, "cut")


# under slow: make test kills two processes inside an epoch in test_distributed's rank_state test
@pytest.mark.parametrize("kills", [pytest.param(2, id="2-kills", marks=pytest.mark.slow),
                                   pytest.param(10, id="10-kills", marks=pytest.mark.slow)])
def test_two_processes_killed_at_random_steps_continue_exactly(project, kills):
    project.configure(checkpoint_every=EVERY, **project.slow)
    project.make("run", TAG="whole", FIX="1", NPROC="2")
    assert kill_at_random_steps(project, kills, seed=kills, NPROC="2") >= 1
    assert_same_run(project, "cut")


def append_config(project, **values):
    """A line the task's config.py lacks (the loop's default holds until it is added)."""
    config = project.path / "code" / "config.py"
    config.write_text(config.read_text() + "".join(f"{k} = {v!r}\n" for k, v in values.items()))
    project.git("commit", "-qam", "config")


def main_pids(project):
    """The pids of this project's main.py processes (the launcher's child, or torchrun's)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            if any(part.endswith(b"code/main.py") for part in command) and \
                    os.readlink(f"/proc/{entry}/cwd") == str(project.path):
                found.append(int(entry))
        except OSError:
            continue
    return found


def parent_of(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def launcher_pid(project, run):
    """The pid of the launcher (scripts/experiment.py) that `make` started for `run`."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            if b"scripts/experiment.py" in command and os.getpgid(int(entry)) == run.pid:
                return int(entry)
        except OSError:
            continue
    raise AssertionError("no launcher found")


@pytest.mark.parametrize("how", [pytest.param("SIGUSR1 to main.py", marks=pytest.mark.slow), "SIGTERM to the launcher",
                                 pytest.param("SIGTERM, two processes", marks=pytest.mark.slow),
                                 pytest.param("SIGUSR1 to one of two processes", marks=pytest.mark.slow)])
def test_a_signal_stops_after_one_step_with_a_checkpoint(project, how):
    """One step later (two processes: at their next agreement, about a second later), every
    rank at the same step, even where only one of them was asked."""
    project.configure(**project.slow, batch_size=8)  # 160 steps an epoch: the signal lands inside one
    processes = {"NPROC": "2"} if "two" in how else {}
    project.make("run", TAG="whole", FIX="1", **processes)
    run = project.start("run", TAG="sig", FIX="1", **processes)
    folder = project.result("sig", 0)
    wait_for(lambda: newest_position(folder) >= (1, 0) or run.poll() is not None, timeout=300, interval=0.001)
    time.sleep(0.1)  # inside epoch 2
    assert run.poll() is None
    if how == "SIGUSR1 to one of two processes":
        pids = main_pids(project)
        workers = [pid for pid in pids if parent_of(pid) in pids]  # not torchrun, whose command names main.py
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGUSR1)
    elif how.startswith("SIGUSR1"):
        for pid in main_pids(project):
            os.kill(pid, signal.SIGUSR1)
    else:
        os.kill(launcher_pid(project, run), signal.SIGTERM)
    out, _ = run.communicate(timeout=120)
    statistic = project.statistic("sig", 0)
    assert statistic["status"] == "stopped", out
    epochs, done = newest_position(folder)
    if processes:  # at the ranks' next agreement, within a second: inside epoch 2 or at its end
        assert (1, 0) < (epochs, done) <= (2, 0)
    else:
        assert epochs == 1 and done > 0  # a checkpoint inside epoch 2, where it stopped
    checkpoint = torch.load(folder / "checkpoint" / (f"step_{epochs}_{done}.pth" if done else f"epoch_{epochs}.pth"),
                            weights_only=True)
    steps = [step for step, _ in curves(folder)["step/loss"]]
    assert steps[-1] == statistic["step"] == checkpoint["step"]  # no step trained past the checkpoint
    assert "stopped: sig/0 after epoch" in (folder / "log").read_text()
    project.make("continue", TAG="sig", **processes)
    assert project.statistic("sig", 0)["metrics"] == project.statistic("whole", 0)["metrics"]


@pytest.mark.slow  # the first Ctrl+C's stop runs in make test (a sweep's, from a script)
def test_a_second_ctrl_c_stops_at_once_and_the_run_stays_continuable(project):
    project.configure(**project.slow, batch_size=8)
    project.make("run", TAG="whole", FIX="1")
    run = project.start("run", TAG="sig", FIX="1")
    folder = project.result("sig", 0)
    wait_for(lambda: newest_position(folder) >= (1, 0) or run.poll() is not None, timeout=300, interval=0.001)
    (pid,) = main_pids(project)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGINT)
    run.communicate(timeout=60)
    assert project.statistic("sig", 0)["status"] == "stopped"
    project.make("continue", TAG="sig")
    assert project.statistic("sig", 0)["metrics"] == project.statistic("whole", 0)["metrics"]


# ---- Slurm -------------------------------------------------------------------------------------
# The script's logic, cheaply, with the variables Slurm sets and two stand-ins on PATH: srun runs
# its command here, scontrol answers `show` and records `requeue`. On a real Slurm: test_slurm.py.

STAND_INS = {
    "srun": '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n',
    "scontrol": '#!/bin/sh\ncase "$1" in\n  show) hostname ;;\n  requeue) printf "%s\\n" "$*" >> "$SCONTROL_LOG" ;;\nesac\n',
}


def sbatch(project, tmp_path, restart_count, signal_after=None, job_id="42", number=0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(project.env, PATH=f"{bin_dir}:{os.environ['PATH']}", GITEXP_TAG="slurm", GITEXP_FIX="1",
               GITEXP_PYTHON=sys.executable,
               SLURM_JOB_ID=job_id, SLURM_JOB_NODELIST="node0", SLURM_NNODES="1", SLURM_NODEID="0",
               SLURM_RESTART_COUNT=str(restart_count), SCONTROL_LOG=str(tmp_path / "scontrol.log"))
    job = subprocess.Popen(["sh", "scripts/slurm.sbatch"], cwd=project.path, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if signal_after is not None:
        folder = project.result("slurm", number)
        wait_for(lambda: newest_position(folder) >= signal_after or job.poll() is not None, timeout=300, interval=0.001)
        assert job.poll() is None, job.communicate()[0]
        os.kill(job.pid, signal.SIGUSR1)  # Slurm's --signal=B:USR1@... reaches the batch shell
    out, _ = job.communicate(timeout=300)
    return job.returncode, out


@pytest.mark.slow  # make test-slurm's test_a_preempted_job_continues_its_own_run..., on a real Slurm
def test_the_slurm_script_stops_on_usr1_requeues_and_the_requeued_job_continues(project, tmp_path):
    project.configure(**project.slow)
    project.make("run", TAG="whole", FIX="1")
    project.git("tag", "-a", "-m", "submitted", "slurm")  # make submit tags at submission
    status, out = sbatch(project, tmp_path, restart_count=0, signal_after=(1, 0))
    assert project.statistic("slurm", 0)["status"] == "stopped", out
    assert (tmp_path / "scontrol.log").read_text() == "requeue 42\n", out
    status, out = sbatch(project, tmp_path, restart_count=1)  # the requeued job
    assert status == 0, out
    assert sorted(p.name for p in (project.path / "__result__" / "slurm").iterdir() if p.name.isdigit()) == ["0"]
    assert project.statistic("slurm", 0)["metrics"] == project.statistic("whole", 0)["metrics"]


@pytest.mark.slow  # make test-slurm's test_two_jobs_of_one_tag_each_finish_their_own_run, on a real Slurm
def test_two_jobs_of_one_tag_requeued_each_continue_their_own_run(project, tmp_path):
    project.configure(**project.slow)
    project.make("run", TAG="whole", FIX="1")
    project.git("tag", "-a", "-m", "submitted", "slurm")  # make submit tags at submission
    for job, number in (("42", 0), ("43", 1)):
        sbatch(project, tmp_path, restart_count=0, signal_after=(1, 0), job_id=job, number=number)
        assert project.statistic("slurm", number)["status"] == "stopped"
    assert project.statistic("slurm", 0)["slurm_job"] == "42" and project.statistic("slurm", 1)["slurm_job"] == "43"
    status, out = sbatch(project, tmp_path, restart_count=1, job_id="42")  # requeued first: the older job
    assert status == 0 and "continuing slurm/0" in out, out
    assert project.statistic("slurm", 0)["status"] == "finished" and project.statistic("slurm", 1)["status"] == "stopped"
    status, out = sbatch(project, tmp_path, restart_count=1, job_id="43")
    assert status == 0 and "continuing slurm/1" in out, out
    for number in (0, 1):
        assert project.statistic("slurm", number)["metrics"] == project.statistic("whole", 0)["metrics"]
