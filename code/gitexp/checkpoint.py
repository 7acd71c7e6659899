"""The training state: one flat checkpoint dict holding everything an exact resume needs
(the template's machinery).

Checkpoints are data, never code: they hold only tensors, numbers, strings, lists and
dicts, and are loaded with `torch.load(weights_only=True)`, which refuses anything else.
"""
import io
import os
import random
import re

import numpy as np
import torch

from gitexp.files import atomic_open, symlink

EPOCH_FILE = re.compile(r"epoch_(\d+)\.pth")


def seed_everything(seed, fix):
    """Seed every generator; with `fix`, also make the kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too
    if fix:
        # must be set before the first cuBLAS call; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_state(loader_generator):
    numpy_state = np.random.get_state(legacy=False)
    # np.random.get_state()'s ndarray does not load under weights_only; a list of ints does
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        # the current device's only: a checkpoint from GPUS=0,1 must also continue on GPUS=0
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "loader": loader_generator.get_state(),
    }


def set_rng_state(state, loader_generator):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = dict(numpy_state["state"], key=np.array(numpy_state["state"]["key"], dtype=np.uint32))
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    loader_generator.set_state(state["loader"])


def serialize(checkpoint):
    """The checkpoint as bytes, taken now: what is written later, on another thread, is this.
    (In memory first also because torch.save hides a full disk behind a vague RuntimeError,
    where a plain write reports it as the OSError it is.)"""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getbuffer()


def save_checkpoint(folder, epoch, data, is_best, keep=None):
    """Write epoch_<n>.pth atomically, point epoch_last/epoch_best at it, prune old epochs."""
    name = f"epoch_{epoch}.pth"
    folder.mkdir(exist_ok=True)
    with atomic_open(folder / name, "wb") as f:
        f.write(data)
    symlink(name, folder / "epoch_last.pth")
    if is_best:
        symlink(name, folder / "epoch_best.pth")
    if keep is not None:
        protected = {os.readlink(folder / link) for link in ("epoch_last.pth", "epoch_best.pth")
                     if (folder / link).is_symlink()}
        for old in epoch_files(folder)[keep:]:
            if old.name not in protected:
                old.unlink()


def epoch_files(folder):
    """epoch_<n>.pth files, newest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("epoch_*.pth") if (m := EPOCH_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def load_latest(folder):
    """The newest readable checkpoint as (checkpoint, path, skipped paths with their errors),
    or (None, None, skipped). epoch_last.pth points at the newest epoch file, unless a kill fell
    between writing that file and moving the link: the files themselves are the truth."""
    skipped = []
    for path in epoch_files(folder) if folder.is_dir() else []:
        try:
            return load_checkpoint(path), path, skipped
        except Exception as error:  # truncated, corrupt, or not plain data (weights_only refused it)
            skipped.append((path, error))
    return None, None, skipped
