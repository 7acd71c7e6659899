"""Crash-safe file updates, for both sides (the launcher's scripts too): a file is written to a
temp file beside it, fsynced and renamed over it, so a reader sees the old file or the new
one, never half of one, and a crash leaves one or the other. Standard library only.
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


def temp_path(path):
    """Where a new version of `path` is written before it replaces it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def stage(path, data):
    """`data` written into a temp file beside `path`, not yet on disk: publish(staged, path)
    puts it in place. Two steps, so that the writing (CPU work) can be done on the training
    thread and the waiting for the disk on another."""
    staged = open(temp_path(path), "wb")
    try:
        staged.write(data)
        staged.flush()
    except BaseException:
        discard(staged)
        raise
    return staged


def discard(staged):
    staged.close()
    Path(staged.name).unlink(missing_ok=True)


def publish(staged, path):
    """fsync the staged file, then rename it over `path`: a reader sees the old file or the new
    one, never half of one."""
    try:
        with staged:
            os.fsync(staged.fileno())
        os.replace(staged.name, path)
    except BaseException:
        discard(staged)
        raise
    _fsync_dir(Path(path).parent)


@contextmanager
def replacing(path):
    """A temp file beside `path` for the block to write; once the block ends without an error
    it is fsynced and renamed over `path` (else removed)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path, content):
    """Write `content` (text or bytes) to `path` through replacing(), its folder made first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


def json_bytes(data):
    return (json.dumps(data, indent=2) + "\n").encode()


def write_json(path, data):
    atomic_write(path, json_bytes(data))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def symlink(target, link):
    """Point `link` at `target` (relative) by renaming a new link over it: `ln -sf` would
    leave a moment with no link at all."""
    link = Path(link)
    tmp = temp_path(link)
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
