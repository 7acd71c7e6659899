"""A run's model after training (issue 35, its first part): `results.model(run)` builds it with
the run's own code snapshot and loads its checkpoint, whatever HEAD's code is now, two runs of
different code side by side in one process, from a copy of __result__/ alone."""
import shutil
import subprocess
import sys

import pytest
import torch

from gitexp import results  # code/ is on the path (conftest)


def best_state(project, tag):
    return torch.load(project.result(tag, 0) / "checkpoint" / "epoch_best.pth", weights_only=True)["model"]


def assert_state(model, state):
    assert model.state_dict().keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_a_runs_model_loads_by_its_own_code_after_head_changed(project, tmp_path):
    project.make("run", TAG="small", FIX="1")
    project.configure(hidden=48)  # HEAD's model no longer fits small/0's checkpoint
    project.make("run", TAG="wide", FIX="1")
    root = str(project.path)
    small, wide = results.model("small/0", root=root), results.model("wide/0", root=root)
    assert not small.training and not wide.training
    assert_state(small, best_state(project, "small"))
    assert_state(wide, best_state(project, "wide"))
    assert small.classifier[1].out_features == 32 and wide.classifier[1].out_features == 48
    assert type(small) is not type(wide)  # each run's own module
    assert results.config("small/0", root=root).hidden == 32 and results.config("wide/0", root=root).hidden == 48
    assert "config" not in sys.modules or getattr(sys.modules["config"], "hidden", None) != 32
    last = results.model("small/0", checkpoint="last", root=root)
    assert_state(last, torch.load(project.result("small", 0) / "checkpoint" / "epoch_last.pth",
                                  weights_only=True)["model"])
    assert results.data_dir("small/0", root=root).is_dir()
    with pytest.raises(FileNotFoundError, match="no checkpoint 9"):
        results.model("small/0", checkpoint=9, root=root)
    # a machine that holds only a copy of __result__/: no git, no code/, no tags
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(project.path / "__result__", elsewhere / "__result__", symlinks=True)
    assert_state(results.model("small/0", root=str(elsewhere)), best_state(project, "small"))
    with pytest.raises(FileNotFoundError, match=r"small/0's data .* is not here: copy it with __result__/"):
        results.data_dir("small/0", root=str(elsewhere))
    # there, gitexp itself comes from the run's snapshot; and a notebook in the project's notebooks/
    # needs no root=
    (project.path / "notebooks").mkdir()
    for folder, path in ((elsewhere, "__result__/small/0/code"), (project.path / "notebooks", "../code")):
        loaded = subprocess.run([sys.executable, "-c", NOTEBOOK.format(path=path)], cwd=folder, capture_output=True,
                                text=True, env=dict(project.env, PYTHONPATH=""))
        assert loaded.returncode == 0 and loaded.stdout.split() == ["32", "False"], loaded.stderr
    project.make("more", TAG="small")
    with pytest.raises(ValueError, match=r"small names 2 runs \(ids 0, 1\): name one, e.g. small/0"):
        results.model("small", root=root)
    with pytest.raises(FileNotFoundError, match="no experiment smal/0 in .*: give root= the folder that holds"):
        results.model("smal/0", root=root)


NOTEBOOK = """import sys; sys.path.insert(0, "{path}")
from gitexp import results
net = results.model("small/0")
print(net.classifier[1].out_features, net.training)"""


def test_a_model_sized_by_its_data_loads_with_the_facts_it_recorded(request, tmp_path):
    from conftest import copy_project, pristine_of
    stream = copy_project(pristine_of(request, "stream"), tmp_path, "stream")
    stream.make("run", TAG="s", FIX="1")
    model = results.model("s/0", root=str(stream.path))
    assert model.embed.num_embeddings == stream.statistic("s", 0)["data"]["facts"]["vocab_size"]
    assert_state(model, best_state(stream, "s"))
