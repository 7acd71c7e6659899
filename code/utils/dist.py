"""Several processes through torchrun: rank 0 does all the writing, the others only train."""
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
    if world_size == 1:
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


def barrier():
    if dist.is_initialized():
        dist.barrier()


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()
