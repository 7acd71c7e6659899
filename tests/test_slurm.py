"""make submit and make sweep SLURM=1 on a real Slurm: a private two-node cluster started here
(tests/slurm_cluster.py; as root, Debian's slurmctld, slurmd and munge). make test-slurm runs them."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import copy_project, set_config, wait_for
from slurm_cluster import Cluster, installed

pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not installed(), reason="Slurm is not installed (apt-get install slurmctld slurmd "
                                                         "slurm-client munge)"),
              pytest.mark.skipif(os.geteuid() != 0, reason="the private Slurm is started as root")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield started
    started.stop()


@pytest.fixture
def slurm_project(pristine, tmp_path, cluster):
    project = copy_project(pristine, tmp_path)
    project.env["SLURM_CONF"] = str(cluster.conf)
    project.configure("slower", epochs=5, channels=32)  # long enough for a signal mid-run, two nodes too
    return project


@pytest.fixture
def slurm_vision(pristine_vision, tmp_path, cluster):
    """The vision task (a DataLoader with two workers) on the cluster."""
    project = copy_project(pristine_vision, tmp_path, "vision")
    project.env["SLURM_CONF"] = str(cluster.conf)
    project.configure("longer", epochs=40)  # some 8 s: a signal lands inside it
    return project


def submit(project, **variables):
    out = project.make("submit", **variables).stdout
    job = out.split("submitted job ")[1].split(":")[0]
    return job


def job_state(cluster, job):
    return cluster.run("scontrol", "show", "job", job).split("JobState=")[1].split()[0]


def wait_done(cluster, job, timeout=600):
    wait_for(lambda: job_state(cluster, job) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout, 1)
    return job_state(cluster, job)


def output(project, job):
    return (project.path / "__result__" / ".slurm" / f"{job}.out").read_text()


def preempt_when_checkpointed(project, cluster, job, tag, number):
    folder = project.result(tag, number)
    wait_for(lambda: any((folder / "checkpoint").glob("*")) if (folder / "checkpoint").is_dir() else False, 600, 0.05)
    assert cluster.run("scancel", "--signal=USR1", "--batch", job) == ""


def by_sweep_run(project, tag):
    return {s["sweep_run"]: s for s in (project.statistic(tag, n) for n in (0, 1))}


def ids(project, tag):
    return sorted(p.name for p in (project.path / "__result__" / tag).iterdir() if p.name.isdigit())


@pytest.mark.parametrize("shape", [{}, {"NPROC": "2"}, {"NODES": "2"}], ids=["one", "nproc2", "nodes2"])
def test_a_preempted_job_continues_its_own_run_to_the_uninterrupted_metrics(slurm_project, cluster, shape):
    project = slurm_project
    whole = submit(project, TAG="whole", FIX="1", **shape)
    assert wait_done(cluster, whole) == "COMPLETED", output(project, whole) + cluster.log()
    job = submit(project, TAG="cut", FIX="1", **shape)
    preempt_when_checkpointed(project, cluster, job, "cut", 0)
    assert wait_done(cluster, job) == "COMPLETED", output(project, job)
    text = output(project, job)
    assert "requeueing job" in text and text.count("gitexp: job ") == 2, text  # both legs, appended
    assert ids(project, "cut") == ["0"]
    cut, reference = project.statistic("cut", 0), project.statistic("whole", 0)
    assert cut["status"] == "finished" and cut["slurm_job"] == job
    assert cut["conditions"] == reference["conditions"]
    assert cut["metrics"] == reference["metrics"]
    assert "set in the environment" not in text


def test_two_jobs_of_one_tag_each_finish_their_own_run(slurm_project, cluster):
    project = slurm_project
    first = submit(project, TAG="dup", FIX="1")
    second = submit(project, TAG="dup", FIX="1")
    preempt_when_checkpointed(project, cluster, first, "dup", 0)
    for job in (first, second):
        assert wait_done(cluster, job) == "COMPLETED", output(project, job)
    assert ids(project, "dup") == ["0", "1"]
    jobs = {project.statistic("dup", n)["slurm_job"]: project.statistic("dup", n)["status"] for n in (0, 1)}
    assert jobs == {first: "finished", second: "finished"}


def test_a_job_runs_the_commit_it_was_submitted_at(slurm_project, cluster):
    project = slurm_project
    job = submit(project, TAG="pinned", FIX="1", SBATCH="--hold")
    submitted = project.git("rev-parse", "HEAD")
    project.configure("another config", epochs=1)  # HEAD moves on while the job waits
    listed = project.make("ls").stdout  # the queued job, with the run it will make
    assert f"  job {job} pending (JobHeldUser): pinned (no run yet)" in listed, listed
    cluster.run("scontrol", "release", job)
    assert wait_done(cluster, job) == "COMPLETED", output(project, job)
    statistic = project.statistic("pinned", 0)
    assert statistic["commit"] == submitted and statistic["epoch"] == 5


def test_submit_refuses_mistakes_before_sbatch(slurm_project):
    project = slurm_project
    assert "TAG is missing" in project.make("submit", check=False).stderr
    (project.path / "code" / "config.py").write_text("dirty = 1\n")
    assert "uncommitted changes" in project.make("submit", TAG="x", check=False).stderr
    assert not (project.path / "__result__" / ".slurm").exists()


def test_a_sweep_is_one_job_array_and_a_preempted_task_continues(slurm_project, cluster, tmp_path):
    project = slurm_project
    (project.path / "code" / "sweeps").mkdir(exist_ok=True)
    (project.path / "code" / "sweeps" / "grid.py").write_text("lr = [0.1, 0.05, 0.02]\nruns_per_point = 2\n")
    project.git("add", "-A")
    project.git("commit", "-qm", "sweep grid")
    (tmp_path / "local").mkdir()
    local = copy_project(project.path, tmp_path / "local")
    out = project.make("sweep", NAME="grid", SLURM="1", PARALLEL="2", FIX="1").stdout
    array = out.split("submitted job array ")[1].split()[0]
    preempt_when_checkpointed(project, cluster, f"{array}_0", "grid-lr0.1", 0)
    wait_for(lambda: cluster.run("squeue", "-h", "-j", array) == "", 900, 2)
    local.make("sweep", NAME="grid", JOBS="2", FIX="1", timeout=900)
    for tag in ("grid-lr0.1", "grid-lr0.05", "grid-lr0.02"):
        assert ids(project, tag) == ["0", "1"], tag
        ours, theirs = by_sweep_run(project, tag), by_sweep_run(local, tag)  # ids go in finishing order
        assert sorted(ours) == sorted(theirs) == [0, 1], tag
        for k in (0, 1):
            assert ours[k]["status"] == "finished" and ours[k]["conditions"] == theirs[k]["conditions"]
            assert ours[k]["metrics"] == theirs[k]["metrics"], (tag, k)
    assert "requeueing job" in (project.path / "__result__" / ".slurm" / f"{array}_0.out").read_text()
    assert "nothing to submit" in project.make("sweep", NAME="grid", SLURM="1").stdout


def whole_then_cut(project, cluster):
    """A FIX=1 job `whole` run to its end, then a job `cut` of the same, once it has a checkpoint."""
    whole = submit(project, TAG="whole", FIX="1")
    assert wait_done(cluster, whole) == "COMPLETED", output(project, whole) + cluster.log()
    job = submit(project, TAG="cut", FIX="1")
    folder = project.result("cut", 0) / "checkpoint"
    wait_for(lambda: any(folder.glob("*.pth")) if folder.is_dir() else False, 600, 0.05)
    return job


def test_scancel_of_a_job_with_loader_workers_stops_its_run_which_continues_exactly(slurm_vision, cluster):
    """scancel without --signal: SIGTERM to every process of the job, workers included, then
    SIGKILL after KillWait. The run stops at a step with a checkpoint (not failed by a worker's
    death) and a make continue ends where an uninterrupted run does."""
    project = slurm_vision
    job = whole_then_cut(project, cluster)
    assert cluster.run("scancel", job) == ""
    assert wait_done(cluster, job) == "CANCELLED", output(project, job)
    statistic = project.statistic("cut", 0)
    assert statistic["status"] == "stopped" and "error" not in statistic, output(project, job)
    assert "killed by signal" not in output(project, job) and "Traceback" not in output(project, job)
    project.make("continue", TAG="cut")
    cut = project.statistic("cut", 0)
    assert cut["status"] == "finished" and cut["metrics"] == project.statistic("whole", 0)["metrics"]
    assert [leg["ended"] for leg in cut["legs"]] == ["stopped", "finished"]


def test_a_job_preempted_with_a_grace_time_is_requeued_and_continues_exactly(slurm_vision, cluster):
    """PreemptMode=REQUEUE with GraceTime: a job of a higher partition takes the nodes; the
    preempted job gets SIGTERM everywhere, stops at a step, is requeued by Slurm, and its next
    start continues its own run to the uninterrupted metrics."""
    project = slurm_vision
    job = whole_then_cut(project, cluster)
    urgent = cluster.run("sbatch", "--parsable", "--partition=urgent", "--nodes=2", "--exclusive",
                         f"--output={project.path}/urgent.out", "--wrap=sleep 2").strip()
    assert wait_done(cluster, urgent) == "COMPLETED", cluster.log()
    assert wait_done(cluster, job) == "COMPLETED", output(project, job) + cluster.log()
    text = output(project, job)
    assert text.count("gitexp: job ") == 2 and "Traceback" not in text, text  # preempted, then requeued
    cut = project.statistic("cut", 0)
    assert cut["status"] == "finished" and cut["metrics"] == project.statistic("whole", 0)["metrics"]
    assert [leg["how"] for leg in cut["legs"]] == ["run", "requeue"]
    assert cut["legs"][0]["ended"] == "stopped" and cut["legs"][0]["slurm_job"] == job
