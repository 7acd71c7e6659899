"""The derived cache, __statistic__/.deps/: what ls, title and table keep to be fast, each
file with the stat key of every statistic.json it was read from. A derived file that is
missing, damaged or of another version costs one cold read, never a wrong answer.
Standard library only.
"""
import marshal
import os
import struct
import time
from pathlib import Path

from gitexp.files import atomic_write
from parallel import in_halves
from store import RESULTS

DEPS = Path("__statistic__/.deps")
STAT = struct.Struct("4q")  # a stat key: mtime_ns, ctime_ns, size, inode, as 32 bytes
RACY = STAT.pack(-1, -1, -1, -1)  # stands for the stat key of a file too recently changed to trust it
MISSING = bytes(STAT.size)
RACY_NS = 2 * 10**9  # a timestamp's tick is up to 2 s on some file systems
# what reading a derived file raises where it is missing, damaged, of another version or of
# another shape: each reader then does without it (one cold read)
DAMAGED = (OSError, EOFError, ValueError, TypeError, LookupError)


def read_cache(path, version):
    """The dict write_cache wrote to `path` with {"version": version}; ValueError for another
    version. (marshal.load(f) would read it item by item: 10 times slower.)"""
    with open(path, "rb") as f:
        cache = marshal.loads(f.read())
    if cache["version"] != version:
        raise ValueError(f"{path} has version {cache['version']}, not {version}")
    return cache


def write_cache(path, cache):
    """`cache` (a dict of plain values with its "version") to `path`, as marshal."""
    atomic_write(path, marshal.dumps(cache))


def stat_key(stat):
    """What says a file is unchanged (any write changes its ctime, which no one can set back),
    as bytes: a list's are kept as one string of them."""
    return STAT.pack(stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)


def settled_key(stat):
    """stat_key, or RACY for a file changed less than RACY_NS ago: a second change within its
    timestamp's tick could leave its stat as it is."""
    return stat_key(stat) if stat.st_ctime_ns < time.time_ns() - RACY_NS else RACY


def stat_or_none(path):
    try:
        return stat_key(os.stat(path))
    except OSError:
        return None


def stat_all(names):
    """The stat keys of the experiments' statistic.json files, one string (MISSING for a missing
    one), in two processes where there are many: a stat costs some 2 us, mostly the kernel's."""
    def stat_part(part):
        keys = []
        for name in part:
            try:
                keys.append(stat_key(os.stat(f"{RESULTS}/{name}/statistic.json")))
            except OSError:
                keys.append(MISSING)
        return b"".join(keys)
    return in_halves(names, stat_part)


def key_slice(i):
    """Where row i's key is in a string of stat keys (to read or to set it)."""
    return slice(i * STAT.size, (i + 1) * STAT.size)


def keys_of(stats):
    """The stat keys in a string of them, one a file."""
    return [stats[i:i + STAT.size] for i in range(0, len(stats), STAT.size)]


def indices_of(stats, key):
    """Where `key` (MISSING, RACY) is in a string of stat keys, as row indices."""
    found, at = [], stats.find(key)
    while at >= 0:
        if at % STAT.size == 0:
            found.append(at // STAT.size)
        at = stats.find(key, at + 1)
    return found
