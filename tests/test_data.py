"""The record never lies (issue 11): data prepared by each experiment's own code and config,
kept under a key of what made it, fingerprinted; the environment recorded; continue and rerun
on the data a run began with."""
import json
import os
import re

import pytest

from conftest import assert_refused, copy_project


@pytest.fixture
def charlm(pristine_charlm, tmp_path):
    return copy_project(pristine_charlm, tmp_path, "charlm")


def data_folders(project):
    return sorted(p.name for p in (project.path / "__data__").iterdir() if not p.name.startswith("."))


def folder_state(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_config_value_prepare_reads_gives_its_own_data(charlm):
    """The n30 scenario: charlm's prepare() reads n_files. Another value is another data set in
    its own folder; a config value prepare() does not read shares the folder."""
    project = charlm
    project.make("run", TAG="sixty")
    first = project.statistic("sixty", 0)["data"]
    assert "preparing data" not in (project.result("sixty", 0) / "log").read_text()  # make data did it
    folder = project.path / "__data__" / first["key"]
    before = folder_state(folder)

    project.configure(lr=0.001)  # not read by prepare()
    project.make("run", TAG="lr")
    assert project.statistic("lr", 0)["data"] == first

    project.configure(n_files=30)
    out = project.make("run", TAG="n30").stdout
    assert "preparing data (config changed: n_files = 30 (prepared with 60))" in out
    second = project.statistic("n30", 0)["data"]
    assert second["key"] != first["key"] and second["fingerprint"] != first["fingerprint"]
    assert project.statistic("n30", 0)["hparams"]["n_files"] == 30
    assert project.statistic("n30", 0)["metrics"] != project.statistic("sixty", 0)["metrics"]
    assert folder_state(folder) == before  # the 60-file data is untouched
    record = json.loads((project.path / "__data__" / second["key"] / ".gitexp-data.json").read_text())
    assert record["config"] == {"n_files": 30} and set(record["code"]) == {"data.py"}
    assert record["fingerprint"] == second["fingerprint"]


def test_rerun_of_an_older_tag_after_data_py_changed_uses_its_own_data(charlm):
    project = charlm
    project.make("run", TAG="old", FIX="1")
    data_py = project.path / "code" / "data.py"
    data_py.write_text(data_py.read_text().replace('sorted(library.glob("*.py"))[:cfg.n_files]',
                                                   'sorted(library.glob("*.py"))[-cfg.n_files:]'))
    project.git("commit", "-qam", "data: the last files instead of the first")
    assert "preparing data (code changed: data.py)" in project.make("run", TAG="new", FIX="1").stdout
    old, new = project.statistic("old", 0), project.statistic("new", 0)
    assert new["data"]["fingerprint"] != old["data"]["fingerprint"]

    out = project.make("rerun", TAG="old").stdout
    assert "preparing data" not in out and "metrics equal to old/0" in out
    rerun = project.statistic("old", 1)
    assert rerun["data"] == old["data"] and rerun["metrics"] == old["metrics"]


def own_data(project):
    """Turn the example's data.py into one whose data is the user's own (no prepare(), a
    fingerprint(cfg) over a folder of theirs), and copy the digits there."""
    mine = project.path / "__data__" / "mine"
    mine.mkdir()
    (prepared,) = [p for p in (project.path / "__data__").iterdir() if (p / ".gitexp-data.json").exists()]
    for name in ("images.npy", "labels.npy"):
        (mine / name).write_bytes((prepared / name).read_bytes())
    data_py = project.path / "code" / "data.py"
    text = data_py.read_text().replace("def prepare(cfg, folder):", "def unused(cfg, folder):")
    text = text.replace("np.load(folder / ", "np.load(MINE / ")
    text += ('\n\nfrom pathlib import Path\n'
             'from gitexp.datastore import listing_fingerprint\n'
             'MINE = Path("__data__/mine")\n\n\n'
             'def fingerprint(cfg):\n    return listing_fingerprint(MINE)\n')
    data_py.write_text(text)
    project.git("commit", "-qam", "data: my own")
    return mine


def test_continue_on_changed_data_is_refused_and_changes_nothing(project):
    mine = own_data(project)
    project.make("run", TAG="own", FIX="1")
    statistic = project.statistic("own", 0)
    assert statistic["data"]["key"] is None and len(statistic["data"]["fingerprint"]) == 64
    path = project.result("own", 0) / "statistic.json"
    path.write_text(json.dumps(dict(statistic, status="failed")))
    (project.result("own", 0) / "checkpoint" / "epoch_3.pth").unlink()

    (mine / "labels.npy").write_bytes((mine / "labels.npy").read_bytes())  # rewritten: another mtime
    before = project.snapshot()
    result = project.make("continue", TAG="own", check=False)
    assert_refused(result, "the data changed: own/0 ran on data", statistic["data"]["fingerprint"][:12],
                   "make rerun TAG=own ID=0")
    assert project.snapshot() == before
    assert_refused(project.make("continue", TAG="own", NPROC="2", check=False), "the data changed")
    assert project.snapshot() == before


def test_two_runs_that_need_new_data_at_once_prepare_it_once(charlm):
    project = charlm
    project.configure(n_files=25)
    before = data_folders(project)
    project.side_by_side()
    runs = [project.start("run", TAG="twice") for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    logs = [(project.result("twice", n) / "log").read_text() for n in (0, 1)]
    assert sum(log.count("preparing data") for log in logs) == 1
    assert len(data_folders(project)) == len(before) + 1
    assert project.statistic("twice", 0)["data"] == project.statistic("twice", 1)["data"]


def test_a_refused_run_prepares_nothing(charlm):
    project = charlm
    project.configure(n_files=20)
    config = project.path / "code" / "config.py"
    config.write_text(config.read_text() + "# uncommitted\n")
    before = project.snapshot()
    assert_refused(project.make("run", TAG="dirty", check=False), "uncommitted changes")
    assert project.snapshot() == before


def test_make_data_says_what_it_prepared(project):
    out = project.make("data").stdout
    project.make("run", TAG="d")
    assert f"data: __data__/{project.statistic('d', 0)['data']['key']} (fingerprint" in out


def test_the_environment_is_recorded(project):
    project.make("run", TAG="env", NPROC="2")
    environment = project.statistic("env", 0)["environment"]
    assert set(environment) == {"python", "torch", "cuda", "cudnn", "gpus", "host", "cuda_visible_devices", "device",
                                "threads", "interop_threads", "omp_num_threads", "mkl_num_threads", "deterministic"}
    # the one thread policy: the CPUs shared by the two processes, as torch reports it
    assert environment["threads"] == max(1, len(os.sched_getaffinity(0)) // 2) == int(environment["omp_num_threads"])
    assert re.fullmatch(r"3\.\d+\.\d+", environment["python"]) and environment["torch"].startswith("2.")
    assert environment["cuda_visible_devices"] == ""  # NPROC hides the GPUs
    assert environment["deterministic"] is False
    project.make("run", TAG="env", FIX="1")
    assert project.statistic("env", 1)["environment"]["deterministic"] is True  # FIX=1's kernels


def test_rerun_names_what_differs_between_the_runs(project):
    project.make("run", TAG="paper", FIX="1")
    path = project.result("paper", 0) / "statistic.json"
    statistic = json.loads(path.read_text())
    monitor = statistic["hparams"]["monitor"]
    statistic["metrics"]["best"][monitor] = 0.5  # as if it had run elsewhere
    statistic["environment"]["torch"] = "1.13.1"
    statistic["data"]["fingerprint"] = "f" * 64
    path.write_text(json.dumps(statistic))
    out = project.make("rerun", TAG="paper").stdout
    torch_version = project.statistic("paper", 1)["environment"]["torch"]
    new = project.statistic("paper", 1)["data"]["fingerprint"][:12]
    assert f"the two runs differ in: data fingerprint ffffffffffff -> {new}; torch 1.13.1 -> {torch_version}" in out


def test_tables_show_run_facts_and_note_a_tag_that_pools_unlike_runs(project):
    project.make("run", TAG="a")
    project.make("run", TAG="a")  # another seed: a distinct run, pooled
    path = project.result("a", 1) / "statistic.json"
    statistic = json.loads(path.read_text())
    statistic["data"]["fingerprint"] = "e" * 64  # as if a/1 had read other data
    path.write_text(json.dumps(statistic))
    (project.path / "__statistic__" / "exper-list" / "facts.txt").write_text("a\n")
    out = project.make("table", LIST="facts", CHANGED="1").stdout.splitlines()
    out = out[[row.split()[:1] for row in out].index(["exper"]):]  # after make's title and table lines
    assert out[0].split()[:3] == ["exper", "run.seed", "run.data"], out  # then the metrics, two seeds apart
    assert out[2].split()[0] == "a/1" and out[2].split()[2] == "eeeeeeeeeeee"
    assert out[-1].startswith("note: the ids of tag a differ in data: its mean and std")
    title = (project.path / "__statistic__" / "title" / "facts.json").read_text()
    for key in ("run.seed", "run.fix", "run.world_size", "run.data", "run.torch", "run.host"):
        assert f'"{key}"' in title
