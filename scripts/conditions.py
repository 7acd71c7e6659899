"""The conditions of a run: the devices (GPUS, NPROC, NNODES), the thread count, and what of
them statistic.json records ("conditions"), enforced on continue and rerun. Standard library only.
"""
import os
import re
import subprocess
import sys

from cli import UserError, env
from gitexp.layout import checkpoint_position
from names import GPU_LIST, NUMBER, check_number


def python():
    """The interpreter the loop runs under: PY, as make gives it, or this one."""
    return env("PY") or sys.executable


def devices_given():
    return any(env(name) for name in ("GPUS", "NPROC", "NNODES", "NODE_RANK"))


def parse_devices(gpus=None, nproc=None, nnodes=None):
    """(processes on this node, nodes, this node's rank, the CUDA_VISIBLE_DEVICES to set or None),
    from GPUS, NPROC and NNODES (or the values given instead, a run's recorded ones)."""
    gpus = env("GPUS") if gpus is None else gpus
    nproc = env("NPROC") if nproc is None else nproc
    nnodes = env("NNODES") if nnodes is None else nnodes
    if gpus and nproc:
        raise UserError("GPUS and NPROC were both given: GPUS=0,1 runs one process per GPU, NPROC=n n processes on CPU")
    if gpus:
        if not GPU_LIST.fullmatch(gpus):
            raise UserError(f"GPUS={gpus!r} is not a list of GPU indices: use e.g. GPUS=0 or GPUS=0,1")
        indices = [int(g) for g in gpus.split(",")]
        if len(set(indices)) != len(indices):
            raise UserError(f"GPUS={gpus!r} names a GPU twice: list each GPU once")
        count = cuda_device_count()
        if count == 0:
            raise UserError(f"GPUS={gpus} was given but CUDA is not available here: leave GPUS out to run on CPU")
        missing = [i for i in indices if i >= count]
        if missing:
            raise UserError(f"GPUS={gpus}: there is no GPU {missing[0]} (this machine has {count}: 0-{count - 1})")
        processes, visible = len(indices), gpus
    elif nproc:
        processes, visible = check_number("NPROC", nproc), ""  # no GPU visible: gloo on CPU, as promised
        if not 1 <= processes <= 256:
            raise UserError(f"NPROC={nproc} is out of range: give 1 to 256 processes")
    else:
        processes, visible = 1, None
    nodes = check_number("NNODES", nnodes) if nnodes else 1
    if nodes < 1:
        raise UserError("NNODES=0 is out of range: give the number of machines, 1 or more")
    node_rank = check_number("NODE_RANK", env("NODE_RANK")) if env("NODE_RANK") else 0
    if node_rank >= nodes:
        raise UserError(f"NODE_RANK={node_rank} is not below NNODES={nodes}: number the machines 0 to {nodes - 1}")
    if nodes > 1:
        if not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", env("MASTER_ADDR")):
            raise UserError("NNODES>1 needs MASTER_ADDR, the address of the node with NODE_RANK=0 (a host name or IP)")
        if not env("MASTER_PORT"):
            raise UserError("NNODES>1 needs MASTER_PORT, a free port on the MASTER_ADDR node, e.g. MASTER_PORT=29500")
    if env("MASTER_PORT") and not 1 <= check_number("MASTER_PORT", env("MASTER_PORT")) <= 65535:
        raise UserError(f"MASTER_PORT={env('MASTER_PORT')} is not a port: give 1-65535")
    return processes, nodes, node_rank, visible


def cuda_device_count():
    """The GPUs GPUS can name: those of the machine, as CUDA_VISIBLE_DEVICES=GPUS will see them."""
    probe_env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    probe = subprocess.run([python(), "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True, env=probe_env)
    return int(probe.stdout.strip() or 0) if probe.returncode == 0 else 0


def thread_count(processes, runs_at_once=1):
    """One thread policy for run, more, continue, rerun and sweep: each process gets an equal
    share of the CPUs this launcher may use (taskset's and Slurm's limits count), as torch would
    take them all for one process; OMP_NUM_THREADS set in the environment wins. A thread count
    changes a CPU run's numbers (float sums split differently), so it is recorded, and continue
    and rerun use the recorded one."""
    given = env("OMP_NUM_THREADS")
    if NUMBER.fullmatch(given) and int(given) > 0:
        return int(given)
    return max(1, len(os.sched_getaffinity(0)) // (processes * runs_at_once))


def conditions(devices, threads):
    """What, besides code, data and seed, changes a run's numbers: statistic.json's "conditions"."""
    processes, nodes, _, visible = devices
    return {"world_size": processes * nodes, "nodes": nodes, "processes_per_node": processes,
            "gpus": visible or None, "nproc": processes if visible == "" else None, "threads": threads}


def recorded_devices(statistic):
    """The devices a run was started with, for its continue and rerun: GPUS, NPROC, NNODES as
    its record says (a run recorded before conditions were: its world size on CPU)."""
    recorded = statistic.get("conditions") or {}
    nodes = recorded.get("nodes", 1)
    if nodes > 1 and not env("NNODES"):
        name = f"{statistic['tag']}/{statistic['id']}"
        raise UserError(f"{name} ran on {nodes} nodes: give NNODES={nodes} with NODE_RANK, MASTER_ADDR and "
                        "MASTER_PORT on each node (a Slurm job gives them), as it was started")
    gpus, nproc = recorded.get("gpus") or "", recorded.get("nproc")
    if not recorded and statistic.get("world_size", 1) > 1:
        nproc = statistic["world_size"]
    return parse_devices(gpus, str(nproc) if nproc and not gpus else "", env("NNODES"))


def devices_and_threads(statistic, given):
    """The devices and thread count a continue or rerun of `statistic`'s run uses: the recorded
    ones, unless GPUS, NPROC or NNODES were given (`given`: then the thread policy's for them)."""
    if given is not None:
        return given, thread_count(given[0])
    devices = recorded_devices(statistic)
    return devices, (statistic.get("conditions") or {}).get("threads") or thread_count(devices[0])


def latest_checkpoint(folder):
    """The name of the newest checkpoint file in folder/checkpoint (epoch_<n>.pth, or
    step_<e>_<k>.pth inside an epoch), or None."""
    found = [(position, path.name) for path in (folder / "checkpoint").glob("*.pth")
             if not path.is_symlink() and (position := checkpoint_position(path.name))]
    return max(found)[1] if found else None


def check_resumable(folder, statistic, devices, threads):
    """Refuse, before anything starts, a continue that could not be exact: the checkpoints its
    record promises are gone, or the conditions differ where the checkpoint is inside an epoch
    (each rank's place in its shard is only meaningful for the same world size)."""
    name, tag, number = f"{statistic['tag']}/{statistic['id']}", statistic["tag"], statistic["id"]
    latest = latest_checkpoint(folder)
    if latest is None and (statistic.get("epoch") or statistic.get("step")):
        raise UserError(f"{name} is recorded at epoch {statistic.get('epoch')}, step {statistic.get('step')}, but "
                        f"{folder}/checkpoint/ holds no checkpoint: restore them and continue; or make rerun TAG={tag} "
                        f"ID={number} (a new id, from the start); or make rm EXP={name}")
    recorded = statistic.get("conditions") or {"world_size": statistic.get("world_size", 1)}
    now = {"world_size": devices[0] * devices[1], "threads": threads}
    changed = [f"{key.replace('_', ' ')} {recorded[key]} -> {now[key]}" for key in now
               if recorded.get(key) is not None and recorded[key] != now[key]]
    if changed and latest and latest.startswith("step_"):
        raise UserError(f"{name} stopped inside an epoch ({latest}) with {'; '.join(changed)}: continue it as it "
                        f"ran (make continue TAG={tag} ID={number}, without GPUS/NPROC/NNODES, takes its own)")
    return changed
