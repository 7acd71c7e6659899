"""`make eval` (issue 35): a run's checkpoint evaluated again by its own code reproduces the
metrics its training recorded, bit for bit; WITH= a later commit's evaluation sets apply to the
run's model; each evaluation is appended to statistic.json's `evaluations`, nothing else in it
changing; the table's title and make diff show them."""
import fcntl
import json
import re
import shutil

import pytest

from conftest import Project, assert_refused

ONLY_VAL = ('return train_batches, {"val": shard(val), "test": shard(test)}',  # data.py's line, and without test
            'return train_batches, {"val": shard(val)}')


NEW_STATE = [  # task.py's lines, and with a state declared (which the evaluation does not use)
    ('return {"optimizer": optimizer, "scheduler": scheduler, "interval": "epoch"}',
     'return {"optimizer": optimizer, "scheduler": scheduler, "interval": "epoch",\n'
     '            "state": {"ema": torch.optim.swa_utils.AveragedModel(model)}}'),
    ("def train_step(model, batch, optimizer, device):", "def train_step(model, batch, optimizer, device, state):"),
    ("def evaluate(model, batches, device):", "def evaluate(model, batches, device, state):")]


@pytest.fixture(scope="module")
def trained(pristine, tmp_path_factory):
    """A copy whose data.py evaluates on val alone, with two runs of two epochs: x/0 (FIX=1) and
    x/1 (a seed of its own)."""
    base = tmp_path_factory.mktemp("eval")
    shutil.copytree(pristine, base / "project", symlinks=True)
    (base / "home").mkdir()
    project = Project(base / "project", base / "home")
    data = project.path / "code" / "data.py"
    data.write_text(data.read_text().replace(*ONLY_VAL))
    project.configure("val alone, two epochs", epochs=2)
    project.make("run", TAG="x", FIX="1")
    project.make("more", TAG="x")
    return base


@pytest.fixture
def evaluated(trained, tmp_path):
    shutil.copytree(trained / "project", tmp_path / "project", symlinks=True)
    (tmp_path / "home").mkdir()
    return Project(tmp_path / "project", tmp_path / "home")


def statistic_text(project, tag, number):
    return (project.result(tag, number) / "statistic.json").read_text()


def without_evaluations(project, tag, number):
    """statistic.json's text as it would be without `evaluations`: the training record's bytes."""
    statistic = project.statistic(tag, number)
    statistic.pop("evaluations")
    return json.dumps(statistic, indent=2) + "\n"


def test_the_runs_best_reproduces_its_recorded_metrics_and_appends_one_record(evaluated):
    project = evaluated
    before = statistic_text(project, "x", 0)
    best = json.loads(before)["metrics"]["best"]
    out = project.make("eval", EXP="x/0").stdout
    assert re.fullmatch(rf"eval x/0 best \(epoch {best['epoch']}\): val_loss \S+  val_acc \S+  \|  equal to the "
                        rf"recorded epoch {best['epoch']} metrics, bit for bit  \|  1 media left out\n", out), out
    statistic = project.statistic("x", 0)
    assert without_evaluations(project, "x", 0) == before  # the training's record, byte for byte
    [record] = statistic["evaluations"]
    assert record["metrics"] == {name: best[name] for name in ("val_loss", "val_acc")}  # exactly
    assert (record["checkpoint"], record["file"], record["epoch"]) == ("best", f"epoch_{best['epoch']}.pth",
                                                                      best["epoch"])
    assert record["commit"] == statistic["commit"] and record["data"] == {
        "key": statistic["data"]["key"], "fingerprint": statistic["data"]["fingerprint"]}
    assert (record["device"], record["media_left_out"]) == ("cpu", 1)


def test_with_a_commit_that_adds_a_test_set_records_its_metrics_with_that_commit(evaluated):
    project = evaluated
    data = project.path / "code" / "data.py"
    data.write_text(data.read_text().replace(*reversed(ONLY_VAL)))
    task = project.path / "code" / "task.py"  # and a state the runs' checkpoints lack (an EMA now declared)
    task.write_text(task.read_text().replace(*NEW_STATE[0]).replace(*NEW_STATE[1]).replace(*NEW_STATE[2]))
    project.git("commit", "-qam", "a test set, an EMA")
    commit = project.git("rev-parse", "HEAD")
    before = statistic_text(project, "x", 0)
    out = project.make("eval", EXP="x/0", WITH="main").stdout
    assert f"eval x/0 best (epoch {json.loads(before)['metrics']['best']['epoch']}) with {commit[:10]}: " in out
    assert "bit for bit (test_loss, test_acc new)" in out  # val: the same set, the same numbers
    assert "state ema started fresh: not in the checkpoint" in out
    [record] = project.statistic("x", 0)["evaluations"]
    assert record["fresh_state"] == ["ema"]
    assert set(record["metrics"]) == {"val_loss", "val_acc", "test_loss", "test_acc"}
    assert record["commit"] == commit and record["data"]["key"] != json.loads(before)["data"]["key"]
    assert without_evaluations(project, "x", 0) == before
    # the table's title offers the evaluation's columns
    project.make("record", EXP="x/0", LIST="evals")
    project.make("title", LIST="evals")
    title = (project.path / "__statistic__" / "title" / "evals.json").read_text()
    assert '"eval.test_acc"' in title and '"eval.val_loss"' in title
    # and the per-tag summary pools them as it pools the training's metrics
    project.make("table", LIST="evals")
    summary = (project.path / "__statistic__" / "table" / "evals.summary.csv").read_text().splitlines()[0]
    assert "eval.test_acc.mean" in summary.split(",")


def test_several_runs_one_line_each_and_bad_input_refused(evaluated):
    project = evaluated
    lines = project.make("eval", EXP="x", CKPT="last").stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["eval x/0 last (epoch 2)", "eval x/1 last (epoch 2)"]
    for number in (0, 1):
        [record] = project.statistic("x", number)["evaluations"]
        assert record["checkpoint"] == "last" and record["epoch"] == 2
    diff = project.make("diff", A="x/0", B="x/1").stdout
    assert "eval.val_acc" in diff and "files/" not in diff
    (project.result("x", 0) / "files").mkdir()
    (project.result("x", 0) / "files" / "predictions.csv").write_text("1,2\n")
    diff = project.make("diff", A="x/0", B="x/1").stdout
    assert re.search(r"files/ that differ.*\n.*\n +predictions.csv +4 +-", diff), diff
    (project.result("x", 1) / "files").mkdir()
    (project.result("x", 1) / "files" / "predictions.csv").write_text("1,3\n")  # the same size, other content
    diff = project.make("diff", A="x/0", B="x/1").stdout
    assert re.search(r"files/ that differ.*\n.*\n +predictions.csv +4 +4 +other content", diff), diff
    assert "unlike evaluations" not in diff  # both: last, with their own commit
    project.make("eval", EXP="x/1")
    assert re.search(r"note: val_acc, val_loss of A and B come from unlike evaluations \(A: last with \w+; "
                     r"B: best with \w+\)", project.make("diff", A="x/0", B="x/1").stdout)

    state = project.snapshot()
    for variables, fragment in [({"EXP": "x/7"}, "there is no experiment x/7"),
                                ({"EXP": "x/0", "CKPT": "9"}, "x/0 has no checkpoint 9"),
                                ({"EXP": "x/0", "CKPT": "first"}, "CKPT='first' is not best, last"),
                                ({"EXP": "x/0", "WITH": "nonesuch"}, "WITH='nonesuch' is not a commit"),
                                ({}, "EXP is missing")]:
        assert_refused(project.make("eval", check=False, **variables), fragment)
    assert "there are: epoch_1.pth, epoch_2.pth" in project.make("eval", check=False, EXP="x/0", CKPT="9").stderr
    assert project.snapshot() == state
    statistic = project.statistic("x", 1)  # a run a process holds now (a continue) is running
    (project.result("x", 1) / "statistic.json").write_text(json.dumps(dict(statistic, status="stopped"), indent=2))
    state = project.snapshot()
    with open(project.result("x", 1) / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert_refused(project.make("eval", check=False, EXP="x/0 x/1"), "x/1 is running now")
    assert project.snapshot() == state
