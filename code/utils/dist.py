"""Several processes through torchrun: rank 0 does all the writing, the others only train."""
import os

import torch
import torch.distributed as dist


def setup():
    """Join the process group that torchrun describes in the environment.
    Returns (rank, world_size, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.get_rank(), world_size, device


def broadcast(obj):
    """Rank 0's `obj` on every rank (itself where there is one process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()
