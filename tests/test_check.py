"""`make check` (issue 26): on the working tree's own task, in a temp folder, recording nothing,
it passes where the task keeps the contract and resumes exactly, and otherwise fails with one
line naming the first thing that went wrong and its fix."""
import pytest

from conftest import copy_project, pristine_of
from test_contract import edit


def untouched(project):
    """Everything but __data__/, where a check prepares the data an edited data.py needs (a
    cache runs share, not a record)."""
    return {path: facts for path, facts in project.snapshot().items() if "/__data__/" not in path}


def assert_passes(project, **variables):
    before = untouched(project)
    result = project.make("check", **variables)
    lines = result.stdout.splitlines()
    assert lines and lines[-1].startswith("check passed: the contract; exact resume (restored at step "), result.stdout
    assert result.stderr == "" or "error:" not in result.stderr, result.stderr
    assert untouched(project) == before  # nothing recorded, nothing changed
    return lines[-1]


def assert_fails(project, *fragments):
    before = untouched(project)
    result = project.make("check", check=False)
    said = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(said) == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in said[0], said[0]
    assert untouched(project) == before


def test_the_example_passes_with_fix_and_records_nothing(project):
    line = assert_passes(project, FIX="1")
    assert "two FIX=1 runs equal" in line and "the data key follows data.py" in line


@pytest.mark.slow
@pytest.mark.parametrize("task", ["charlm", "vision"])
def test_each_fixture_task_passes(request, tmp_path, task):
    assert_passes(copy_project(pristine_of(request, task), tmp_path, task))


@pytest.mark.slow
def test_the_example_passes_with_two_processes(project):
    assert "in 2 processes" in assert_passes(project, NPROC="2")


def test_batches_drawn_after_the_restore_are_named(project):
    # iter_from as a generator: its order is drawn at the first batch, after the loop set the RNG
    edit(project, "data.py", ("        return self.batches(order)", "        yield from self.batches(order)"))
    assert_fails(project, "the batches after the restore differ (step ", "does not draw its order from `generator`")


@pytest.mark.slow
def test_a_hidden_state_of_train_step_is_named(project):
    edit(project, "task.py", ("def train_step(model, batch, optimizer, device):\n",
                              "CALLS = [0]\n\n\ndef train_step(model, batch, optimizer, device):\n    CALLS[0] += 1\n"),
         ('"lr": optimizer.param_groups[0]["lr"]}', '"lr": optimizer.param_groups[0]["lr"], "calls": CALLS[0]}'))
    assert_fails(project, "the training step after the restore differs (step ", "calls",
                 "declare it in configure_optimizers' \"state\"")


@pytest.mark.slow
def test_an_ema_kept_outside_the_checkpoint_is_named(request, tmp_path):
    vision = copy_project(pristine_of(request, "vision"), tmp_path, "vision")
    edit(vision, "task.py", ('    return {"optimizer": optimizer, "state": {"ema": ema}}',
                             '    global EMA\n    EMA = ema\n    return {"optimizer": optimizer}'),
         ("device, state):", "device):"), ('state["ema"]', "EMA"))  # each replaced wherever it is
    assert_fails(vision, "after the restore last.val_", "declare it in configure_optimizers' \"state\"")


CONFUSION = 'media.Image(shares.repeat_interleave(12, 0).repeat_interleave(12, 1))'  # the example's medium


@pytest.mark.parametrize("file, old, new, fragment", [
    ("task.py", '"interval": "epoch"}', '"interval": "epoch", "gradient_clip": 1}',
     "configure_optimizers returned the keys"),
    ("data.py", '{"val": shard(val), "test"', '{"train": shard(val), "test"', "evaluation set named 'train'"),
    ("task.py", 'return {"loss": loss_sum / count, "acc": correct / count,', 'return {"loss": [loss_sum], "acc": 0,',
     "evaluate (val) returned 'loss' that is not a number"),
    ("task.py", CONFUSION, 'media.Image(shares[None, None, None])',
     "evaluate returned media.Image of shape (1, 1, 1, 10, 10) as 'confusion': give (H, W), (C, H, W) or (H, W, C)"),
    ("task.py", CONFUSION, 'shares',
     "returned 'confusion' that is not a number (only one element tensors can be converted to Python scalars): "
     "return numbers or 0-dim tensors, or a picture or text as gitexp.media.Image(...) or media.Text(...)"),
    ("config.py", 'monitor = "val_acc"', 'monitor = "val_accuracy"', "monitor = 'val_accuracy' is not a metric"),
    ("task.py", "def evaluate(", "def evaluation(", "task.py has no evaluate()"),
])
def test_a_broken_contract_is_one_line(project, file, old, new, fragment):
    edit(project, file, (old, new))
    assert_fails(project, fragment)
