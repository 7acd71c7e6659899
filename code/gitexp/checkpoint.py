"""The training state: one flat checkpoint dict holding everything an exact resume needs
(the template's machinery).

Checkpoints are data, never code: they hold only tensors, numbers, strings, lists and
dicts, and are loaded with `torch.load(weights_only=True)`, which refuses anything else.
"""
import contextlib
import copy
import io
import os
import random
import sys

import numpy as np
import torch

from gitexp.files import publish, symlink
from gitexp.layout import EPOCH_FILE, STEP_FILE, checkpoint_position


def seed_everything(seed, fix):
    """Seed every generator; with `fix`, also make the kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too
    if fix:
        # must be set before the first cuBLAS call; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        deterministic_algorithms()
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True), less its import of torch._inductor.config:
    over a second of every FIX=1 process's start on CPU (torch 2.13), for a setting that only
    torch.compile reads. Inductor's config takes it from this variable when a compile loads it."""
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1"
    if "torch._inductor.config" in sys.modules:  # loaded already: the variable was read
        sys.modules["torch._inductor.config"].deterministic = True
    torch._C._set_deterministic_algorithms(True, warn_only=False)


def rng_state(loader_generator):
    numpy_state = np.random.get_state(legacy=False)
    # the two Mersenne Twister states' 624 numbers each as one tensor, not as a list: torch.save
    # pickles a list number by number (a fifth of a small checkpoint's serialising), and
    # np.random.get_state()'s ndarray does not load under weights_only
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    version, internal, gauss = random.getstate()
    return {
        "python": (version, torch.tensor(internal, dtype=torch.int64), gauss),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        # the current device's only: a checkpoint from GPUS=0,1 must also continue on GPUS=0
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "loader": loader_generator.get_state(),
    }


def numbers(twister):
    """A Mersenne Twister state's numbers as a list, from a tensor or (a checkpoint written
    before they were tensors) a list."""
    return twister.tolist() if torch.is_tensor(twister) else list(twister)


def set_rng_state(state, loader_generator):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(numbers(internal)), gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = dict(numpy_state["state"], key=np.array(numbers(numpy_state["state"]["key"]), dtype=np.uint32))
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    loader_generator.set_state(state["loader"])


PLAIN = (int, float, str, bool, type(None))


def plain(values):
    """Whether a list or tuple holds only plain values (an RNG state's 625 numbers): nothing in
    it to walk into, one value at a time."""
    return all(type(value) in PLAIN for value in values)


def on_cpu(tree, copy_all=False):
    """The state with every tensor on the CPU: tensors already there as they are (to serialise
    now), or, with `copy_all`, everything copied, so training can no longer change it."""
    if torch.is_tensor(tree):
        return tree.detach().to("cpu", copy=copy_all)
    if isinstance(tree, dict):
        return {key: on_cpu(value, copy_all) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        if plain(tree):
            return list(tree) if copy_all and isinstance(tree, list) else tree
        return type(tree)(on_cpu(value, copy_all) for value in tree)
    return copy.deepcopy(tree) if copy_all else tree


def snapshot(tree):
    """The state as it is now, in a copy training can no longer change (for a checkpoint the
    writer thread serialises later)."""
    return on_cpu(tree, copy_all=True)


def serialize(checkpoint):
    """The checkpoint as bytes, in memory first: torch.save hides a full disk behind a vague
    RuntimeError, where a plain write reports it as the OSError it is."""
    buffer = io.BytesIO()
    with without_crc32():
        torch.save(checkpoint, buffer)
    return buffer.getbuffer()


def without_crc32():
    """torch.save without the zip CRC32 of each record: torch.load never checks it (a flipped
    byte loads all the same), and it costs some 0.25 ms a MB with the interpreter's lock held.
    A torch without the switch (before 2.7) computes it."""
    try:
        from torch.utils.serialization import config
    except ImportError:
        return contextlib.nullcontext()
    return config.patch(**{"save.compute_crc32": False})


def checkpoint_path(folder, position):
    """Where the checkpoint of `position` (epochs done, steps into the next) goes: at an
    epoch's end (steps 0) epoch_<n>.pth, inside an epoch step_<epochs>_<steps>.pth."""
    epochs, steps = position
    return folder / (f"epoch_{epochs}.pth" if steps == 0 else f"step_{epochs}_{steps}.pth")


def save_checkpoint(folder, position, staged, is_best, keep=None, final=False):
    """Put the checkpoint of `position`, written into `staged` (files.stage), in place atomically.

    At an epoch's end (and at the `final` one of a run stopped early) epoch_last points at it;
    epoch_best wherever it is the best (inside an epoch too, with eval_every). Epoch files beyond
    `keep` are pruned; of the step files only the newest and the best are kept."""
    path = checkpoint_path(folder, position)
    publish(staged, path)
    if is_best:
        symlink(path.name, folder / "epoch_best.pth")
    if not position[1] or final:
        symlink(path.name, folder / "epoch_last.pth")
    protected = {os.readlink(folder / link) for link in ("epoch_last.pth", "epoch_best.pth")
                 if (folder / link).is_symlink()}
    for old in checkpoint_files(folder):
        if STEP_FILE.fullmatch(old.name) and old.name != path.name and old.name not in protected:
            old.unlink()  # an older position, or one this epoch's end supersedes
    if keep is not None and not position[1]:
        for old in epoch_files(folder)[keep:]:
            if old.name not in protected:
                old.unlink()


def checkpoint_files(folder):
    """epoch_<n>.pth and step_<n>_<k>.pth files, newest position first."""
    found = [(position, p) for p in folder.glob("*.pth") if not p.is_symlink() and (position := checkpoint_position(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def epoch_files(folder):
    """epoch_<n>.pth files, newest first."""
    return [p for p in checkpoint_files(folder) if EPOCH_FILE.fullmatch(p.name)]


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def load_latest(folder):
    """The newest readable checkpoint as (checkpoint, path, skipped paths with their errors),
    or (None, None, skipped): a step checkpoint where it is newer than the last epoch's. The
    files themselves are the truth, not epoch_last.pth (a kill can fall between a file and its
    link)."""
    skipped = []
    for path in checkpoint_files(folder) if folder.is_dir() else []:
        try:
            return load_checkpoint(path), path, skipped
        except Exception as error:  # truncated, corrupt, or not plain data (weights_only refused it)
            skipped.append((path, error))
    return None, None, skipped
