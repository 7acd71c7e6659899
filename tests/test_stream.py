"""A run counted in steps (issue 33): nanoGPT's shape in tests/tasks/stream/ (max_steps over a
stream of random windows, the lr set by hand from a declared step counter, evaluation on random
batches from a declared generator, a tokens/s scalar, the model sized by the data's facts), and
what `make check` now names: a state an evaluation changed, the phase of an error, a rank that
trains apart or keeps a state of its own."""
import os

import pytest
import torch

from conftest import copy_project, kill_group, pristine_of, wait_for
from test_check import assert_fails, assert_passes
from test_contract import edit


@pytest.fixture
def stream(request, tmp_path):
    return copy_project(pristine_of(request, "stream"), tmp_path, "stream")


def without_time(metrics):
    """statistic.json's metrics less the tokens/s the task declares as time."""
    return {when: {k: v for k, v in values.items() if k != "train_tokens_per_s"} for when, values in metrics.items()}


def test_a_stream_passes_make_check_with_fix(stream):
    line = assert_passes(stream, FIX="1")
    assert "a stream of steps, evaluated every 10" in line and "after the evaluation at step 10" in line, line


def test_a_stream_killed_after_a_step_checkpoint_continues_to_the_same_numbers(stream):
    stream.configure(max_steps=40, eval_every=10)
    stream.make("run", TAG="whole", FIX="1")
    whole = stream.statistic("whole", 0)
    assert whole["data"]["facts"]["vocab_size"] > 10  # the model was sized by the data
    assert whole["metrics"]["last"]["step"] == 40 and "epoch" not in whole["metrics"]["last"]
    run = stream.start("run", TAG="cut", FIX="1")
    folder = stream.result("cut", 0) / "checkpoint"
    wait_for(lambda: any(folder.glob("step_0_*.pth")) if folder.is_dir() else False or run.poll() is not None,
             interval=0.001)
    assert run.poll() is None, "the run ended before its first step checkpoint"
    kill_group(run)
    result = stream.make("continue", TAG="cut")
    assert any(f"continuing cut/0 from step {step} of 40" in result.stdout for step in (10, 20, 30)), \
        result.stdout
    cut = stream.statistic("cut", 0)
    assert cut["status"] == "finished" and without_time(cut["metrics"]) == without_time(whole["metrics"])
    assert cut["metrics"]["last"]["train_tokens_per_s"] > 0  # recorded, only never compared
    final, reference = (torch.load(stream.result(tag, 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
                        for tag in ("cut", "whole"))
    for name, tensor in reference["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    assert final["extra"]["iter"]["steps"] == 40
    rows = stream.make("ls", TAG="cut").stdout.splitlines()
    assert rows[1].split()[1:4] == ["finished", "step", "40"], rows
    rerun = stream.make("rerun", TAG="whole").stdout
    # tokens/s differs every run: left out, and said so
    assert "metrics equal to whole/0: all " in rerun and "(2 of time_scalars, which measure time, left out)" in rerun, \
        rerun


def test_random_evaluation_batches_from_an_undeclared_generator_are_refused(stream):
    edit(stream, "task.py", ('batches.draw(state["eval_draws"].generator)', "batches.draw(EVAL_DRAWS)"),
         ("def learning_rate(cfg, step):", "EVAL_DRAWS = torch.Generator().manual_seed(1337)\n\n\n"
                                           "def learning_rate(cfg, step):"))
    assert_fails(stream, "after the restore last.val_loss differs", "evaluate uses a state the checkpoint lacks")


@pytest.mark.slow
def test_a_stream_passes_make_check_with_two_processes(stream):
    assert "in 2 processes" in assert_passes(stream, NPROC="2")


@pytest.mark.slow  # make test-faults: make check NPROC=2's drift case is make test's
def test_an_evaluation_that_differs_by_rank_is_named(stream):
    # the global RNG is seeded by rank, and the loss is not summed over the ranks
    edit(stream, "task.py", ('batches.draw(state["eval_draws"].generator)', "batches.draw()"),
         ("    loss_sum, count = sum_over_ranks([loss_sum, count], device)\n", ""))
    result = stream.make("check", NPROC="2", check=False)
    said = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(said) == 1, result.stdout + result.stderr
    assert said[0].startswith("error: the evaluation at step 10 gave val_loss ") and " on rank 1: evaluate must " \
        "answer the same on every rank" in said[0], said[0]


def test_a_declared_state_that_a_function_does_not_take_is_one_line(stream):
    edit(stream, "task.py", ("def evaluate(model, batches, device, state):", "def evaluate(model, batches, device):"),
         ('state["eval_draws"].generator', "None"))
    assert_fails(stream, "configure_optimizers declares \"state\", and evaluate() takes none: add the parameter")


def test_what_only_the_restored_run_trips_on_is_named_as_lost_by_the_continue(project):
    # a list an evaluation fills, read once the optimizer's own (restored) step count passes 12
    edit(project, "task.py", ("def train_step(model, batch, optimizer, device):\n",
                              "SEEN = []\n\n\ndef after_evaluation(metrics, optimizer):\n"
                              "    SEEN.append(metrics['val_loss'])\n\n\n"
                              "def train_step(model, batch, optimizer, device):\n"
                              "    taken = next(iter(optimizer.state.values()), {}).get('step', 0)\n"
                              "    assert taken <= 12 or SEEN[-1] > 0\n"))
    assert_fails(project, "in train_step, after the restore: IndexError", "(task.py:",
                 "the uninterrupted run did not fail here", "(a module global?)")


def test_a_state_an_evaluation_changes_outside_the_checkpoint_is_named(project):
    edit(project, "task.py",
         ("def train_step(model, batch, optimizer, device):\n",
          "LR = [0.002]\n\n\ndef after_evaluation(metrics, optimizer):\n    LR[0] /= 4\n\n\n"
          "def train_step(model, batch, optimizer, device):\n    optimizer.param_groups[0][\"lr\"] = LR[0]\n"))
    assert_fails(project, "after the evaluation at step 12 the optimizer's lr went from 0.002 to 0.0005 in the "
                          "uninterrupted run; after the restore after step 19 the optimizer's lr is 0.002 against 0.0005",
                 "a state changed at evaluation is not in the checkpoint: declare it in configure_optimizers' \"state\"")


def test_an_error_inside_your_code_names_its_phase(project):
    edit(project, "model.py", ("    return Net(cfg.channels, cfg.hidden, cfg.dropout)",
                               "    return Net(cfg.channels, -cfg.hidden, cfg.dropout)"))
    assert_fails(project, "error: in build_model, in the first run: RuntimeError: ", "(model.py:")


@pytest.mark.parametrize("old, new, fragments", [
    # the step calls the DDP-wrapped model's parts: DDP never averages their gradients
    ("    logits = model(x)\n    loss = F.cross_entropy(logits, y)\n",
     "    net = getattr(model, 'module', model)\n    logits = net.classifier(net.features(x))\n"
     "    loss = F.cross_entropy(logits, y)\n",
     ["after step 1 rank 1's model differs from rank 0's", "return each network's optimizer by name"]),
    # a counter that differs by rank, declared as the same on every rank (make test-faults: test_distributed
    # restores a declared rank_state in make test)
    pytest.param('    return {"optimizer": optimizer, "scheduler": scheduler, "interval": "epoch"}',
                 '    return {"optimizer": optimizer, "scheduler": scheduler, "interval": "epoch",'
                 ' "state": {"calls": CALLS}}',
                 ["on rank 1", "declare what differs by rank in configure_optimizers' \"rank_state\""],
                 marks=pytest.mark.slow),
])
def test_two_ranks_that_part_are_named(project, old, new, fragments):
    edit(project, "task.py", (old, new), ("def configure_optimizers(", COUNTER + "def configure_optimizers("),
         ("optimizer, device):", "optimizer, device, state=None):"), ("batches, device):", "batches, device, state=None):"),
         ('"lr": optimizer.param_groups[0]["lr"]}', '"lr": optimizer.param_groups[0]["lr"], "calls": CALLS.add()}'))
    before = project.snapshot()
    result = project.make("check", NPROC="2", check=False)
    said = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(said) == 1, result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in said[0], said[0]
    assert {k: v for k, v in project.snapshot().items() if "/__data__/" not in k} == \
        {k: v for k, v in before.items() if "/__data__/" not in k}


COUNTER = '''class Counter:
    """Steps taken, by rank: rank r counts r + 1 a step."""

    def __init__(self):
        self.count = 0

    def add(self):
        import torch.distributed as dist
        self.count += 1 + (dist.get_rank() if dist.is_initialized() else 0)
        return self.count

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


CALLS = Counter()


'''
