"""Several processes and several machines through torchrun, on CPU with gloo (issue 6)."""
import json
import socket

import pytest
import torch

from conftest import HEAVY_TASK_PARAMS, assert_refused, kill_group, wait_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
def test_two_processes_record_one_experiment_exactly(task_project):
    project = task_project
    project.make("run", TAG="ddp", NPROC="2", FIX="1")
    project.make("run", TAG="ddp", NPROC="2", FIX="1")
    first, second = project.statistic("ddp", 0), project.statistic("ddp", 1)
    assert first["world_size"] == 2 and first["status"] == "finished"
    assert first["metrics"] == second["metrics"]
    assert project.finished() == ["ddp/0", "ddp/1"]
    assert sorted(p.name for p in (project.path / "__result__" / "ddp").iterdir()) == ["0", "1"]
    log = (project.result("ddp", 0) / "log").read_text()
    assert log.count("epoch 3/3") == 1  # rank 0 alone prints
    # the checkpoint holds the bare model (no DDP "module." prefix) and each rank's generators
    state = torch.load(project.result("ddp", 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
    assert not any(name.startswith("module.") for name in state["model"]) and len(state["rng"]) == 2


@pytest.mark.parametrize("task_project", HEAVY_TASK_PARAMS, indirect=True)
def test_two_processes_killed_after_a_checkpoint_continue_to_the_same_metrics(task_project):
    project = task_project
    project.configure(**project.slow)
    project.make("run", TAG="whole", NPROC="2", FIX="1")
    run = project.start("run", TAG="cut", NPROC="2", FIX="1")
    link = project.result("cut", 0) / "checkpoint" / "epoch_last.pth"
    wait_for(lambda: link.is_symlink(), interval=0.001)
    kill_group(run)
    assert project.statistic("cut", 0)["status"] == "running"
    project.make("continue", TAG="cut", NPROC="2")
    assert project.statistic("cut", 0)["metrics"] == project.statistic("whole", 0)["metrics"]
    assert project.finished() == ["whole/0", "cut/0"]


def test_a_two_process_checkpoint_continues_on_one_process(project):
    project.make("run", TAG="shrink", NPROC="2")
    path = project.result("shrink", 0) / "statistic.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), status="failed")))
    (project.result("shrink", 0) / "checkpoint" / "epoch_3.pth").unlink()
    out = project.make("continue", TAG="shrink", NPROC="1").stdout  # from an epoch's end: allowed, recorded
    assert "goes on from an epoch's end with world size 2 -> 1" in out
    statistic = project.statistic("shrink", 0)
    assert statistic["status"] == "finished" and statistic["world_size"] == 1 and statistic["epoch"] == 3
    assert statistic["conditions"]["changed"][0]["world_size"] == 1


def test_a_refused_continue_with_two_processes_changes_nothing(project):
    project.make("run", TAG="bad")
    folder = project.result("bad", 0)
    path = folder / "statistic.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), status="failed")))
    for checkpoint in (folder / "checkpoint").glob("epoch_[0-9]*.pth"):
        checkpoint.write_bytes(b"garbage")
    before = project.snapshot()
    assert_refused(project.make("continue", TAG="bad", NPROC="2", check=False), "no readable checkpoint")
    assert project.snapshot() == before


def test_a_crash_on_one_rank_fails_the_whole_run(project):
    main = project.path / "code" / "main.py"
    text = main.read_text()
    hook = "        is_best = evaluation(run, began)\n"
    assert hook in text
    main.write_text(text.replace(hook, hook + "        if rank == 1 and epoch == 1:\n"
                                             "            raise RuntimeError('rank 1 crashed')\n"))
    project.git("commit", "-qam", "crash on rank 1")
    result = project.make("run", TAG="crash", NPROC="2", check=False)
    assert result.returncode != 0
    # the failing rank's error reaches the terminal, after torchrun's own report
    assert any(line.startswith("error: experiment crash/0 failed") and "rank 1: RuntimeError: rank 1 crashed" in line
               for line in result.stderr.splitlines()), result.stderr
    assert project.statistic("crash", 0)["status"] == "failed"
    # through gitexp/protocol.py's error file, not the log: kept in the record too
    assert project.statistic("crash", 0)["error"] == "rank 1: RuntimeError: rank 1 crashed"
    assert "rank 1 crashed" in (project.result("crash", 0) / "log").read_text()
    assert project.finished() == []


def test_two_nodes_on_loopback_train_together(project):
    nodes = {"NNODES": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    follower = project.start("run", TAG="nodes", NODE_RANK="1", **nodes)
    leader = project.start("run", TAG="nodes", NODE_RANK="0", FIX="1", **nodes)
    assert leader.wait(timeout=300) == 0, leader.stderr.read()
    assert follower.wait(timeout=300) == 0, follower.stderr.read()
    statistic = project.statistic("nodes", 0)
    assert statistic["world_size"] == 2 and statistic["status"] == "finished"
    assert sorted(p.name for p in (project.path / "__result__" / "nodes").iterdir()) == ["0"]
    assert project.finished() == ["nodes/0"]


@pytest.mark.parametrize("variables, message", [
    ({"NPROC": "0"}, "NPROC=0 is out of range"),
    ({"NPROC": "two"}, "NPROC='two' is not a number"),
    ({"NPROC": "2", "GPUS": "0"}, "GPUS and NPROC were both given"),
    ({"GPUS": "0,0"}, "names a GPU twice"),
    ({"NNODES": "2"}, "needs MASTER_ADDR"),
    ({"NNODES": "2", "MASTER_ADDR": "127.0.0.1"}, "needs MASTER_PORT"),
    ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "NODE_RANK=2 is not below NNODES=2"),
    ({"MASTER_PORT": "70000"}, "is not a port"),
    ({"NNODES": "2", "MASTER_ADDR": "h;ls", "MASTER_PORT": "1"}, "needs MASTER_ADDR"),
])
def test_bad_device_input(project, variables, message):
    before = project.snapshot()
    assert_refused(project.make("run", TAG="bad", check=False, **variables), message)
    assert project.snapshot() == before


def test_gpus_without_cuda_is_refused(project):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = project.snapshot()
    assert_refused(project.make("continue", TAG="x", GPUS="1", check=False), "CUDA is not available")
    assert_refused(project.make("run", TAG="x", GPUS="99", check=False), "CUDA is not available")
    assert project.snapshot() == before


COUNTING = '''
import os as _os
from pathlib import Path as _Path

import torch.distributed as _dist

# test only: every collective the loop calls through torch.distributed, counted between steps
_counted = {"calls": 0}


def _counting(name):
    real = getattr(_dist, name)

    def counted(*args, **kwargs):
        _counted["calls"] += 1
        return real(*args, **kwargs)
    setattr(_dist, name, counted)


for _name in ("all_reduce", "broadcast", "all_gather", "all_gather_object", "broadcast_object_list", "barrier",
              "reduce", "gather", "scatter", "all_to_all"):
    _counting(_name)


def _step_began():
    with open(_Path("calls") / _os.environ["RANK"], "a") as calls:
        calls.write(f"{_counted['calls']}\\n")
    _counted["calls"] = 0
'''


def test_no_collective_for_the_stop_agreement_on_ordinary_steps(project):
    """Under NPROC=2 the ranks agree whether to stop about once a second, not at every step:
    between two steps inside an epoch there is, almost always, no collective call at all."""
    task = project.path / "code" / "task.py"
    text = task.read_text().replace('    x, y = (t.to(device, non_blocking=True) for t in batch)\n    logits',
                                    '    _step_began()\n    x, y = (t.to(device, non_blocking=True) for t in batch)\n'
                                    '    logits')
    task.write_text(text + COUNTING)
    (project.path / "calls").mkdir()
    (project.path / ".gitignore").write_text("calls/\n")
    project.git("add", "-A")
    project.git("commit", "-qm", "count the collectives")
    project.make("run", TAG="count", NPROC="2")
    # 1258 training images: 629 a rank, 20 batches of 32
    for rank in ("0", "1"):
        counts = [int(n) for n in (project.path / "calls" / rank).read_text().split()]
        assert len(counts) == 3 * 20, len(counts)
        inside = [count for n, count in enumerate(counts) if n % 20]  # not an epoch's first step
        # the agreements: the first step, then about once a second (these runs last seconds)
        assert sum(1 for count in inside if count) <= 6, counts
        assert all(count <= 1 for count in inside), counts


RANK_COUNTER = '''

class RankCounter:
    """State that differs by rank, as a data loader's position does: what this rank counted."""

    def __init__(self):
        self.seen = 0

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]
'''


def with_rank_state(project):
    """The example with a per-rank counter declared as rank_state, in its step scalars."""
    task = project.path / "code" / "task.py"
    text = task.read_text()
    for old, new in [
        ('"interval": "epoch"}', '"interval": "epoch", "rank_state": {"counter": RankCounter()}}'),
        ("def train_step(model, batch, optimizer, device):", "def train_step(model, batch, optimizer, device, state):"),
        ("def evaluate(model, batches, device):", "def evaluate(model, batches, device, state):"),
        ('"lr": optimizer.param_groups[0]["lr"]}',
         '"lr": optimizer.param_groups[0]["lr"], "counted": count(state["counter"])}'),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    text += RANK_COUNTER + '''

def count(counter):
    counter.seen += 1 + torch.distributed.get_rank() if torch.distributed.is_initialized() else 1
    return counter.seen
'''
    task.write_text(text)
    project.git("commit", "-qam", "rank state")


def test_state_that_differs_by_rank_is_saved_and_restored_per_rank(project):
    with_rank_state(project)
    project.configure(**project.slow, checkpoint_every=5)
    project.make("run", TAG="whole", NPROC="2", FIX="1")
    run = project.start("run", TAG="cut", NPROC="2", FIX="1")
    folder = project.result("cut", 0)
    wait_for(lambda: any(folder.glob("checkpoint/step_1_*.pth")), interval=0.001)  # inside epoch 2
    kill_group(run)
    project.make("continue", TAG="cut")
    whole, cut = (torch.load(project.result(tag, 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
                  for tag in ("whole", "cut"))
    counts = [state["counter"]["seen"] for state in whole["rank_extra"]]
    assert counts[1] == 2 * counts[0] > 0  # rank 1 counts by 2: each rank its own
    assert [state["counter"]["seen"] for state in cut["rank_extra"]] == counts
    assert project.statistic("cut", 0)["metrics"] == project.statistic("whole", 0)["metrics"]
