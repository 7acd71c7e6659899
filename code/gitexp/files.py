"""Crash-safe file updates: a reader sees the old file or the new one, never half of one.
(The template's machinery.)"""
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path, mode="w", uncached=False):
    """Write to a temp file in the same folder, fsync it, then rename it over `path`.
    `uncached`: a file written once and seldom read (a checkpoint) leaves the page cache once
    it is on disk, so it does not push out what training reads every epoch (its data), and
    the next one is written into memory already in use rather than into fresh pages."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if uncached and hasattr(os, "posix_fadvise"):  # not on macOS
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_json(path, data):
    with atomic_open(path) as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def symlink(target, link):
    """Point `link` at `target` (relative) by renaming a new link over it: `ln -sf` would
    leave a moment with no link at all."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def append_line_once(path, line):
    """Append `line` unless it is already there; an exclusive lock keeps concurrent
    finishers from interleaving or adding it twice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        if line not in f.read().splitlines():
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
