"""Several processes through torchrun: rank 0 does all the writing, the others only train.
(The template's machinery; sum_over_ranks is there for your evaluate() too.)"""
import ctypes
import os
import signal
import sys

import torch
import torch.distributed as dist


def setup():
    """Join the process group that torchrun describes in the environment.
    Returns (rank, world_size, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if "LOCAL_RANK" not in os.environ:  # not started by torchrun: one process, no group
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    die_with_parent()
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.get_rank(), world_size, device


def die_with_parent():
    """torchrun starts each worker in a session of its own, so killing the job's process group
    (kill -9, a preempted job) would leave workers behind, still training and writing. Linux
    ends a process when its parent ends, if asked (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request
        os._exit(1)


def rank():
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def broadcast(obj):
    """Rank 0's `obj` on every rank (itself where there is one process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj):
    """Every rank's `obj`, as a list indexed by rank."""
    if not dist.is_initialized():
        return [obj]
    box = [None] * dist.get_world_size()
    dist.all_gather_object(box, obj)
    return box


def sum_over_ranks(numbers, device):
    """The sums of `numbers` (numbers or 0-dim tensors) over every rank, as floats (float64:
    exact for counts). Metrics reduced as sums, not means, are exact whatever the ranks' shard
    sizes."""
    sums = torch.stack([torch.as_tensor(n, dtype=torch.float64, device=device).reshape(()) for n in numbers]) \
        if numbers else torch.zeros(0, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(sums)
    return sums.tolist()


def set_epoch(batches, epoch):
    """Tell every shuffling sampler the batch source holds which epoch it is (DistributedSampler
    shuffles by seed and epoch): the source itself, its sampler, its batch_sampler and the
    batch_sampler's sampler (a DataLoader given batch_sampler=BatchSampler(DistributedSampler)).
    Any batch source is allowed: one without such a sampler is left alone."""
    batch_sampler = getattr(batches, "batch_sampler", None)
    told = set()
    for source in (batches, getattr(batches, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
        if hasattr(source, "set_epoch") and id(source) not in told:
            told.add(id(source))
            source.set_epoch(epoch)


def average_gradients_before_step(optimizer):
    """Before every step() of `optimizer`, its parameters' gradients averaged over the ranks:
    what DDP's wrapper does in backward, for a step that calls several networks itself (a GAN's
    G and D, each with its optimizer). A parameter must have a gradient on every rank or none."""
    def average(optimizer, args, kwargs):
        world = dist.get_world_size()
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad.div_(world)
    optimizer.register_step_pre_hook(average)


def broadcast_model(model):
    """Rank 0's parameters and buffers on every rank (DDP's wrapper does it when built)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, 0)


def broadcast_buffers(model):
    """Rank 0's buffers (BatchNorm's running statistics) on every rank, after each step: DDP's
    wrapper does it before each forward."""
    for buffer in model.buffers():
        dist.broadcast(buffer.data, 0)


def barrier():
    if dist.is_initialized():
        dist.barrier()


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()
