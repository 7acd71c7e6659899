"""The launcher's one way to write a file: a temp file beside it, fsync, rename over it; a
reader sees the old file or the new one, never half of one, and a crash leaves one or the
other. (code/gitexp/files.py is the loop's, with the same promise.) Standard library only.
"""
import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path):
    """A temp file beside `path` for the block to write; once the block ends without an
    error it is fsynced and renamed over `path` (else removed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path, content):
    """Write `content` (text or bytes) to `path` through replacing(), its folder made first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


def write_json(path, data):
    """`data` as indented JSON, through atomic_write."""
    atomic_write(path, json.dumps(data, indent=2) + "\n")
