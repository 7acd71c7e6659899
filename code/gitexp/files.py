"""Crash-safe file updates: a reader sees the old file or the new one, never half of one.
(The template's machinery.)"""
import errno
import fcntl
import json
import mmap
import os
from pathlib import Path

# O_DIRECT wants the memory, the offset and the length aligned to the disk's logical block
# (512 or 4096 bytes): 4096 suits both, and mmap's memory starts on a page
DIRECT_ALIGNMENT = 4096


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


class PageBuffer:
    """A file-like buffer in page-aligned memory, for torch.save to write a checkpoint into and
    stage_direct to write out; kept from one checkpoint to the next (emptied each time), so its
    pages are in place already."""

    def __init__(self):
        self.memory, self.size = None, 0  # allocated by the first checkpoint, to its size

    def empty(self, expected=0):
        """Emptied, with room for some `expected` bytes (a checkpoint's tensors: the rest of it
        fits in the margin), so that it grows in one step, not by copies."""
        self.size = 0
        wanted = expected + expected // 16 + (256 << 10)
        if self.memory is None or wanted > len(self.memory):
            if self.memory is not None:
                self.memory.close()
            self.memory = allocate(wanted)
        return self

    def write(self, data):
        end = self.size + len(data)
        if end > len(self.memory):
            grown = allocate(max(end, 2 * len(self.memory)))
            with memoryview(self.memory) as old:
                grown[:self.size] = old[:self.size]
            self.memory.close()
            self.memory = grown
        self.memory[self.size:end] = data
        self.size = end
        return len(data)

    def flush(self):
        pass

    def getbuffer(self):
        """The bytes written since it was emptied (as io.BytesIO.getbuffer)."""
        return memoryview(self.memory)[:self.size]


def aligned(size):
    """`size` rounded up to a multiple of DIRECT_ALIGNMENT."""
    return -(-size // DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT


def allocate(size):
    """Page-aligned memory of at least `size` bytes, a multiple of DIRECT_ALIGNMENT, its pages
    mapped at once (Linux): faulted in one by one, a few MB would cost a first checkpoint a ms."""
    return mmap.mmap(-1, aligned(size), flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0))


def stage_direct(path, buffer):
    """stage() for a PageBuffer's bytes, with O_DIRECT where the file system takes it: the disk
    reads them from the buffer itself, with no copy into the page cache for the CPU to make
    (and to write back and evict later)."""
    if hasattr(os, "O_DIRECT"):  # not on macOS
        try:
            return _stage_past_the_cache(path, buffer)
        except OSError as error:
            if error.errno != errno.EINVAL:  # EINVAL: the file system takes no O_DIRECT, or not these sizes
                raise
    return stage(path, buffer.getbuffer())


def _stage_past_the_cache(path, buffer):
    staged = open(temp_path(path), "wb", buffering=0, opener=lambda name, flags: os.open(name, flags | os.O_DIRECT, 0o666))
    try:
        padded = aligned(buffer.size)  # the tail past buffer.size is cut off again below
        with memoryview(buffer.memory) as memory:
            written = 0
            while written < padded:
                written += staged.write(memory[written:padded])
        os.ftruncate(staged.fileno(), buffer.size)
    except BaseException:
        discard(staged)
        raise
    return staged


def publish(staged, path, uncached=False):
    """fsync the staged file, then rename it over `path`: a reader sees the old file or the new
    one, never half of one. `uncached`: a file written once and seldom read (a checkpoint)
    leaves the page cache once it is on disk, so it does not push out what training reads
    every epoch (its data), and the next one is written into memory already in use rather
    than into fresh pages."""
    try:
        with staged:
            os.fsync(staged.fileno())
            if uncached and hasattr(os, "posix_fadvise"):  # not on macOS
                os.posix_fadvise(staged.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        os.replace(staged.name, path)
    except BaseException:
        discard(staged)
        raise
    _fsync_dir(Path(path).parent)


def json_bytes(data):
    return (json.dumps(data, indent=2) + "\n").encode()


def write_json(path, data):
    publish(stage(path, json_bytes(data)), path)


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
