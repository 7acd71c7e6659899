"""The researcher's contract without traps (issue 26): what a task may answer is taken, or
refused in one line before training; nothing fails an epoch later or goes silently wrong."""
import io
import json
import sys
import types
from contextlib import redirect_stdout

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import BatchSampler, DataLoader
from torch.utils.data.distributed import DistributedSampler

from conftest import ROOT

sys.path.insert(0, str(ROOT / "code"))
from gitexp import contract, datastore, dist  # noqa: E402
from gitexp.events import EventFile  # noqa: E402
from gitexp.protocol import ConfigError  # noqa: E402
from gitexp.record import Recorder  # noqa: E402

sys.path.pop(0)


def edit(project, name, *replacements):
    """Replace text in code/<name> (each `old` must be there), without committing."""
    path = project.path / "code" / name
    text = path.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)


def hugging_face_shaped(project):
    """The example as a Hugging Face model and a Lightning user would write it: the forward
    returns a dict and takes keyword inputs, evaluate returns tensors, configure_optimizers
    Lightning's shape with a per-step schedule, and train_step reads the config."""
    edit(project, "model.py",
         ("return self.classifier(self.features(x))", "return {'logits': self.classifier(self.features(x))}"),
         ("return torch.zeros(batch, 1, 8, 8)", "return {'x': torch.zeros(batch, 1, 8, 8)}"))
    edit(project, "task.py", ("import torch\n", "import torch\n\nimport config\n"),
         ("logits = model(x)\n    loss = F", "logits = model(x)['logits']\n    loss = F"),
         ('"lr": optimizer.param_groups[0]["lr"]}', '"lr": optimizer.param_groups[0]["lr"], "size": config.batch_size}'),
         ("logits = model(x)\n        loss_sum", "logits = model(x)['logits']\n        loss_sum"),
         ('return {"optimizer": optimizer, "scheduler": scheduler, "interval": "epoch"}',
          'scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10, 0.5)\n'
          '    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}'),
         ('return {"loss": loss_sum / count, "acc": correct / count,',
          'return {"loss": torch.tensor(loss_sum / count), "acc": torch.tensor(correct / count),'))


def test_a_dict_model_lightning_schedule_and_tensor_metrics_run_through(project):
    hugging_face_shaped(project)
    project.git("commit", "-qam", "shaped as hugging face and lightning")
    project.make("run", TAG="hf")
    statistic = project.statistic("hf", 0)
    assert statistic["status"] == "finished"
    last = statistic["metrics"]["last"]
    assert all(type(v) in (int, float) for v in last.values()) and 0 < last["val_loss"]
    assert last["train_size"] == 32  # train_step read config.py through `import config`
    # the schedule is stepped every step and saved: 40 steps an epoch, halved every 10
    assert last["train_lr"] < 0.002 / 100
    checkpoint = torch.load(project.result("hf", 0) / "checkpoint" / "epoch_last.pth", weights_only=True)
    assert checkpoint["scheduler"]["last_epoch"] == checkpoint["step"] > 0
    events = EventAccumulator(str(project.result("hf", 0) / "tensorboard"))
    events.Reload()
    assert events.Tags()["graph"]  # the dict output drawn


def shapes(answer):
    """contract.optimizers' answer with each schedule as (scheduler, interval, frequency, monitor)."""
    optimizer, schedules, state, rank_state = contract.optimizers(answer)
    return optimizer, [(s.scheduler, s.interval, s.frequency, s.monitor) for s in schedules], state, rank_state


def test_configure_optimizers_answers_in_every_shape():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    assert shapes(optimizer) == (optimizer, [], {}, {})
    lightning = {"optimizer": optimizer, "lr_scheduler": scheduler}
    assert shapes(lightning) == (optimizer, [(scheduler, "epoch", 1, None)], {}, {})
    counter = torch.optim.lr_scheduler.StepLR(optimizer, 2)  # any object with state_dict/load_state_dict
    assert shapes({"optimizer": optimizer, "scheduler": scheduler, "interval": "step", "state": {"counter": counter}}) \
        == (optimizer, [(scheduler, "step", 1, None)], {"counter": counter}, {})
    assert shapes({"optimizer": optimizer, "rank_state": {"loader": counter}}) == (optimizer, [], {}, {"loader": counter})
    # Lightning's metric-driven schedule, and several named optimizers with a list of schedules
    assert shapes({"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss",
                                                            "interval": "epoch", "frequency": 2}}) == \
        (optimizer, [(plateau, "epoch", 2, "val_loss")], {}, {})
    assert shapes({"optimizer": {"G": optimizer, "D": other}, "scheduler": [scheduler, {"scheduler": counter,
                                                                                          "interval": "step"}]}) == \
        ({"G": optimizer, "D": other}, [(scheduler, "epoch", 1, None), (counter, "step", 1, None)], {}, {})
    for bad in ({"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "batch"}},
                {"optimizer": optimizer, "state": {"ema": 3}}, {"scheduler": scheduler},
                {"optimizer": optimizer, "rank_state": {"loader": 3}},
                {"optimizer": optimizer, "lr_scheduler": plateau},  # its step() needs the metric: no monitor
                {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "frequency": 0}},
                {"optimizer": {"G": optimizer, "D": 3}},
                {"optimizer": optimizer, "state": {"c": counter}, "rank_state": {"c": counter}}):
        with pytest.raises(ConfigError):
            contract.optimizers(bad)
    assert contract.floats({"a": torch.tensor(0.5), "b": 2}, "evaluate") == {"a": 0.5, "b": 2.0}
    with pytest.raises(ConfigError, match="'a' that is not a number"):
        contract.floats({"a": torch.ones(3)}, "evaluate")


def test_set_epoch_reaches_a_distributed_sampler_inside_a_batch_sampler():
    sampler = DistributedSampler(range(10), num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = DataLoader(range(10), batch_sampler=BatchSampler(sampler, 2, drop_last=False))
    dist.set_epoch(loader, 3)
    assert sampler.epoch == 3
    plain = DataLoader(range(10), sampler=DistributedSampler(range(10), num_replicas=2, rank=0), batch_size=2)
    dist.set_epoch(plain, 2)
    assert plain.sampler.epoch == 2


def test_the_data_key_follows_every_module_and_package_data_py_imports(tmp_path):
    files = {
        "data.py": "import numpy\nimport config\nfrom dataprep import tables\nfrom gitexp.datastore import ROOT\n"
                   "def prepare(cfg, folder):\n    import util\n",
        "util.py": "X = 1\n",
        "config.py": "a = 1\n",
        "unused.py": "Y = 2\n",
        "dataprep/__init__.py": "from .clean import strip\n",
        "dataprep/clean.py": "from ..shared import helper\nfrom . import _private\n",
        "dataprep/_private.py": "",
        "dataprep/tables.py": "",
        "shared.py": "def helper(): pass\n",
        "gitexp/__init__.py": "", "gitexp/datastore.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = datastore.code_files(types.SimpleNamespace(__file__=str(tmp_path / "data.py")))
    assert sorted(found) == ["data.py", "dataprep/__init__.py", "dataprep/_private.py", "dataprep/clean.py",
                             "dataprep/tables.py", "shared.py", "util.py"]


def test_a_model_the_jit_cannot_trace_costs_one_warning_not_the_run(tmp_path):
    (tmp_path / "statistic.json").write_text(json.dumps({}))
    recorder = Recorder(tmp_path, 0, types.SimpleNamespace())
    recorder.events = EventFile(tmp_path / "tensorboard")

    def no_example():
        raise RuntimeError("cannot be traced\nsecond line")

    said = io.StringIO()
    with redirect_stdout(said):
        recorder.graph(torch.nn.Linear(2, 2), no_example)
    assert said.getvalue().splitlines() == [
        "warning: the model's graph is not drawn in TensorBoard (RuntimeError: cannot be traced); the run goes on"]
    recorder.writer_thread.shutdown()
