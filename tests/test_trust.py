"""Off the tested path, the record still tells the truth (issue 25): the conditions of a run
recorded and enforced, ids never reused, repeats never pooled, data checked at the end too,
one status everywhere, no silent restart, sweeps checked and stoppable from a script, rm
protecting what lists name. Each test walks one step a user took off the path."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from conftest import assert_refused, kill_group, wait_for
from test_data import own_data


def stop_early(project, tag, **variables):
    """Start a run and ask it to stop at once: it stops inside epoch 1 with a step checkpoint
    (the stop file every rank reads, as a signal to the launcher writes it)."""
    run = project.start("run", TAG=tag, **variables)
    folder = project.result(tag, 0)
    wait_for(lambda: (folder / "log").exists() or run.poll() is not None)
    (folder / ".stop").touch()
    out, err = run.communicate(timeout=300)
    assert project.statistic(tag, 0)["status"] == "stopped", out + err
    assert any(p.name.startswith("step_") for p in (folder / "checkpoint").iterdir())
    return folder


def test_continue_takes_the_recorded_world_size_and_refuses_another_inside_an_epoch(project):
    project.configure(batch_size=8)
    stop_early(project, "ws", NPROC="2", FIX="1")
    before = project.snapshot()
    assert_refused(project.make("continue", TAG="ws", ID="0", NPROC="1", check=False),
                   "ws/0 stopped inside an epoch", "world size 2 -> 1", "without GPUS/NPROC/NNODES")
    assert project.snapshot() == before
    out = project.make("continue", TAG="ws", ID="0").stdout
    statistic = project.statistic("ws", 0)
    assert statistic["status"] == "finished" and statistic["world_size"] == 2, out
    assert statistic["conditions"]["world_size"] == 2 and statistic["conditions"]["nproc"] == 2


def test_one_thread_policy_recorded_and_a_sweep_point_reruns_exactly(project):
    project.make("run", TAG="solo", FIX="1")
    solo = project.statistic("solo", 0)
    cpus = len(os.sched_getaffinity(0))
    assert solo["conditions"]["threads"] == solo["environment"]["threads"] == cpus
    (project.path / "code" / "sweeps").mkdir()
    (project.path / "code" / "sweeps" / "th.py").write_text("lr = [0.002, 0.001]\n")
    project.git("add", "-A")
    project.git("commit", "-qm", "sweep th")
    project.make("sweep", NAME="th", JOBS="2", FIX="1")
    point = project.statistic("th-lr0.002", 0)
    assert point["conditions"]["threads"] == point["environment"]["threads"] == max(1, cpus // 2)
    out = project.make("rerun", TAG="th-lr0.002").stdout
    assert "metrics equal to th-lr0.002/0" in out, out
    assert project.statistic("th-lr0.002", 1)["environment"]["threads"] == max(1, cpus // 2)
    if cpus > 1:  # the sweep point and the run of the same config: the threads name the difference
        out = project.make("diff", A="solo/0", B="th-lr0.002/0").stdout
        assert f"threads  {cpus}" in " ".join(out.split("\n")) or "threads" in out, out


def test_reruns_and_fix_repeats_are_recorded_and_not_pooled(project):
    project.make("run", TAG="d", FIX="1")
    out = project.make("more", TAG="d", FIX="1").stdout
    assert "note: d/0 already ran with seed" in out
    assert project.statistic("d", 1)["repeat_of"] == "d/0"
    project.make("rerun", TAG="d", ID="0")
    assert project.statistic("d", 2)["rerun_of"] == "d/0"
    project.make("more", TAG="d")  # a new seed: a distinct run
    assert "repeat_of" not in project.statistic("d", 3)
    ls = project.make("ls", TAG="d").stdout
    assert "repeat_of d/0" in ls and "rerun_of d/0" in ls
    project.make("run", TAG="e")
    out = project.make("diff", A="d", B="e").stdout
    assert "d (mean of 2 distinct runs; 2 repeats of a seed left out)" in out, out


def test_an_id_is_never_given_twice(project):
    project.make("run", TAG="killme")
    project.make("rm", EXP="killme/0")
    assert not (project.path / "__result__" / "killme").exists()  # no empty folder left
    project.make("run", TAG="killme")
    assert project.result("killme", 1).is_dir() and not project.result("killme", 0).exists()
    project.make("restore", EXP="killme/0")
    project.make("rm", EXP="killme/1")
    project.make("empty-trash", YES="1")
    project.make("run", TAG="killme")
    assert project.result("killme", 2).is_dir()
    assert sorted(p.name for p in (project.path / "__result__" / "killme").iterdir() if p.name.isdigit()) == ["0", "2"]


def test_data_changed_during_a_run_is_recorded_and_a_faithful_copy_matches(project):
    mine = own_data(project)
    project.configure(**project.slow)
    run = project.start("run", TAG="drift", FIX="1")
    folder = project.result("drift", 0)
    wait_for(lambda: (folder / "checkpoint" / "epoch_1.pth").exists() or run.poll() is not None)
    labels = mine / "labels.npy"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))  # a re-write
    out, err = run.communicate(timeout=300)
    statistic = project.statistic("drift", 0)
    assert statistic["status"] == "finished", out + err
    assert statistic["data"]["at_end"] != statistic["data"]["fingerprint"]
    assert "warning: the data changed during the run" in (folder / "log").read_text()
    assert "data changed during the run" in project.make("ls", TAG="drift").stdout

    sys.path.insert(0, str(project.path / "code"))
    try:
        from gitexp.datastore import listing_fingerprint
    finally:
        sys.path.pop(0)
    copy = project.path.parent / "elsewhere"
    shutil.copytree(mine, copy)  # copy2: contents and times, as cp -a or rsync -a keep them
    assert listing_fingerprint(copy) == listing_fingerprint(mine)


def test_continue_over_changed_data_goes_on_only_when_declared_and_recorded(project):
    mine = own_data(project)
    project.configure(batch_size=8)
    stop_early(project, "acc", FIX="1")
    labels = mine / "labels.npy"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    assert_refused(project.make("continue", TAG="acc", check=False), "the data changed", "ACCEPT_DATA=1")
    project.make("continue", TAG="acc", ACCEPT_DATA="1")
    statistic = project.statistic("acc", 0)
    assert statistic["status"] == "finished" and len(statistic["data"]["accepted"]) == 1
    assert statistic["data"]["accepted"][0]["fingerprint"] != statistic["data"]["fingerprint"]
    assert "data accepted as unchanged" in project.make("ls", TAG="acc").stdout


def test_one_status_for_ls_continue_and_rerun(project):
    project.configure(**project.slow)
    run = project.start("run", TAG="conc")
    folder = project.result("conc", 0)
    wait_for(lambda: (folder / "log").exists() or run.poll() is not None)
    assert run.poll() is None
    assert_refused(project.make("continue", TAG="conc", check=False), "conc/0 is running now")
    assert_refused(project.make("rerun", TAG="conc", check=False), "conc/0 is running now")
    assert not project.result("conc", 1).exists()  # refused before anything trained
    assert "running" in project.make("ls", TAG="conc").stdout
    kill_group(run)
    tags = project.make("ls").stdout.splitlines()
    header, line = tags[0].split(), next(t for t in tags if t.startswith("conc ")).split()
    assert dict(zip(header, line))["running"] == "0" and dict(zip(header, line))["stopped"] == "1"
    assert " stopped " in project.make("ls", TAG="conc").stdout


def test_a_continue_whose_checkpoints_are_gone_is_refused_with_the_choices(project):
    project.configure(batch_size=8)
    folder = stop_early(project, "gone", FIX="1")
    shutil.rmtree(folder / "checkpoint")
    before = project.snapshot()
    result = project.make("continue", TAG="gone", check=False)
    assert_refused(result, "holds no checkpoint", "make rerun TAG=gone ID=0", "make rm EXP=gone/0")
    assert project.snapshot() == before


def sweep_file(project, name, text):
    (project.path / "code" / "sweeps").mkdir(exist_ok=True)
    (project.path / "code" / "sweeps" / f"{name}.py").write_text(text)
    project.git("add", "-A")
    project.git("commit", "-qm", f"sweep {name}")


def test_a_sweep_value_of_the_wrong_type_is_refused_before_any_tag(project):
    sweep_file(project, "bad", 'lr = ["1e-3", 0.01]\nhidden = [16, 2.5]\n')
    before = project.snapshot()
    result = project.make("sweep", NAME="bad", check=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(lines) == 2, result.stderr
    assert "lr = '1e-3' is a str, but config.py's lr = 0.002 is a float" in lines[0]
    assert "hidden = 2.5 is a float, but config.py's hidden = 32 is a int" in lines[1]
    assert "Traceback" not in result.stderr and project.snapshot() == before


def test_a_sweep_started_from_a_script_stops_on_sigint_and_launches_no_more(project):
    project.configure(**project.slow)
    sweep_file(project, "bg", "lr = [0.002, 0.001, 0.0005]\n")
    # as `make sweep ... &` in a script: SIGINT comes ignored
    command = f"trap '' INT; exec make sweep NAME=bg TB=0 PYTHON={sys.executable}"
    sweep = subprocess.Popen(["sh", "-c", command], cwd=project.path, env=project.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = project.result("bg-lr0.002", 0)
    wait_for(lambda: (first / "checkpoint" / "epoch_1.pth").exists() or sweep.poll() is not None, timeout=300)
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl+C, to every process of the job
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode != 0 and "stopped: make sweep NAME=bg goes on" in out, out + err
    assert project.statistic("bg-lr0.002", 0)["status"] == "stopped"
    assert not project.result("bg-lr0.001", 0).exists() and not project.result("bg-lr0.0005", 0).exists()


def test_rm_protects_a_run_a_list_names_by_its_bare_tag_or_a_sweep_list(project):
    for tag in ("base", "base", "base", "other"):
        project.make("run", TAG=tag)
    (project.path / "__statistic__" / "exper-list" / "paper.txt").write_text("other/0\nbase\n")
    before = project.snapshot()
    assert_refused(project.make("rm", EXP="other/0 base/2", check=False), "paper (other/0, base/2)")
    assert project.snapshot() == before
    sweep_file(project, "s", "lr = [0.002]\n")
    project.make("sweep", NAME="s")
    before = project.snapshot()
    assert_refused(project.make("rm", EXP="s-lr0.002/0", check=False), "sweep s's list (s-lr0.002/0)")
    assert project.snapshot() == before


def test_a_continue_from_an_epoch_end_with_other_conditions_is_recorded(project):
    from test_continue import checkpoint_written, kill_when
    project.configure(**project.slow)
    tag = kill_when(project, checkpoint_written(1))
    out = project.make("continue", TAG=tag, NPROC="2").stdout
    assert "goes on from an epoch's end with world size 1 -> 2" in out, out
    statistic = project.statistic(tag, 0)
    assert statistic["status"] == "finished" and statistic["conditions"]["world_size"] == 1
    (changed,) = statistic["conditions"]["changed"]
    assert changed["world_size"] == 2 and changed["epoch"] >= 1
