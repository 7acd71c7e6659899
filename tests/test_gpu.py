"""On a GPU (issue 16): marked `gpu`, skipped with the reason where CUDA is absent. `make test-gpu`
runs them (with PYTHON=python3 on a machine whose own Python holds torch). The one-process
torchrun is also tried on CPU, with gloo, where it can run anywhere."""
import json
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import assert_refused, kill_group, wait_for

cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="CUDA is not available here: make test-gpu runs these where a GPU is")
pytestmark = pytest.mark.gpu


def checkpoint_link(project, tag):
    return project.result(tag, 0) / "checkpoint" / "epoch_last.pth"


def kill_after(project, tag, epoch, **variables):
    run = project.start("run", TAG=tag, FIX="1", **variables)
    link = checkpoint_link(project, tag)
    wait_for(lambda: link.is_symlink() and os.readlink(link) == f"epoch_{epoch}.pth" or run.poll() is not None,
             interval=0.0005)
    assert run.poll() is None, "the run ended before it could be killed"
    kill_group(run)


@cuda
def test_fix_on_a_gpu_repeats_bit_for_bit(task_project):
    project = task_project
    project.make("run", TAG="gpu", GPUS="0", FIX="1")
    project.make("run", TAG="gpu", GPUS="0", FIX="1")
    first, second = project.statistic("gpu", 0), project.statistic("gpu", 1)
    assert first["metrics"] == second["metrics"]
    assert first["environment"]["gpus"] and first["environment"]["cuda_visible_devices"] == "0"


@cuda
def test_a_gpu_run_killed_after_its_second_checkpoint_continues_exactly(task_project):
    project = task_project
    project.configure(**project.slow)
    project.make("run", TAG="whole", GPUS="0", FIX="1")
    kill_after(project, "cut", 2, GPUS="0")
    project.make("continue", TAG="cut", GPUS="0")
    assert project.statistic("cut", 0)["metrics"] == project.statistic("whole", 0)["metrics"]
    final = torch.load(checkpoint_link(project, "cut"), weights_only=True)
    reference = torch.load(checkpoint_link(project, "whole"), weights_only=True)
    for name, tensor in reference["model"].items():
        assert torch.equal(final["model"][name], tensor), name


@cuda
def test_a_cuda_checkpoint_continues_on_cpu_and_back(project):
    project.configure(**project.slow)
    kill_after(project, "move", 1, GPUS="0")
    run = project.start("continue", TAG="move", NPROC="1")  # NPROC hides the GPUs: the CPU
    link = checkpoint_link(project, "move")
    wait_for(lambda: os.readlink(link) == "epoch_2.pth" or run.poll() is not None, interval=0.0005)
    if run.poll() is None:
        kill_group(run)
    project.make("continue", TAG="move", GPUS="0")
    statistic = project.statistic("move", 0)
    assert statistic["status"] == "finished" and statistic["epoch"] == project.slow["epochs"]


@cuda
def test_one_gpu_through_torchrun_with_nccl(project):
    project.make("run", TAG="nccl", GPUS="0", NNODES="1", FIX="1")
    statistic = project.statistic("nccl", 0)
    assert statistic["status"] == "finished" and statistic["world_size"] == 1
    project.make("run", TAG="plain", GPUS="0", FIX="1")
    assert statistic["metrics"] == project.statistic("plain", 0)["metrics"]


@cuda
def test_the_gpu_name_is_in_statistic_json_and_the_live_tensorboard(project):
    project.make("run", TAG="named", GPUS="0")
    name = torch.cuda.get_device_name(0)
    assert project.statistic("named", 0)["environment"]["gpus"] == [name]
    events = EventAccumulator(str(project.result("named", 0) / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("environment/text_summary")
    assert name in text.tensor_proto.string_val[0].decode()


def test_gpus_with_nproc_is_refused(project):
    before = project.snapshot()
    assert_refused(project.make("run", TAG="x", GPUS="0", NPROC="2", check=False), "GPUS and NPROC were both given")
    assert project.snapshot() == before


def test_one_process_through_torchrun_where_there_is_no_gpu(project):
    """NNODES=1 runs even one process through torchrun: the path a one-GPU NCCL run takes."""
    project.make("run", TAG="one", NPROC="1", NNODES="1", FIX="1")
    project.make("run", TAG="plain", FIX="1")
    statistic = project.statistic("one", 0)
    assert statistic["status"] == "finished" and statistic["world_size"] == 1
    assert statistic["metrics"] == project.statistic("plain", 0)["metrics"]
    events = EventAccumulator(str(project.result("one", 0) / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("environment/text_summary")
    assert json.loads(text.tensor_proto.string_val[0].decode().strip("`"))["cuda_visible_devices"] == ""
