"""Make's scan of a list: `python scripts/scan.py` (the recipe of __statistic__/.deps/<LIST>.state).

It writes __statistic__/.deps/<LIST>.state, what the list names and the stat key of each
statistic.json, only when that changed: the file's mtime is when the list's experiments last
changed, make's prerequisite of the title and the table. title.py and table.py take the
list's experiments from it (list_state). Input comes from the environment (STATISTIC_STEM).
Standard library only.
"""
import hashlib
import os
import time

from cache import DAMAGED, DEPS, MISSING, RACY, RACY_NS, STAT, indices_of, key_slice, read_cache, stat_all, stat_or_none, write_cache
from cli import UserError, env, run
from lists import expand_list, list_name, list_path
from store import RESULTS

STATE_VERSION = 3


def state_path(name):
    return DEPS / f"{name}.state"


def load_state(name):
    """The state scan() last wrote for list `name`, or None where there is none it can trust."""
    try:
        state = read_cache(state_path(name), STATE_VERSION)
        if len(state["names"]) * STAT.size == len(state["stats"]):
            return state
    except DAMAGED:
        pass
    return None


def content_digest(name):
    try:
        with open(f"{RESULTS}/{name}/statistic.json", "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).digest()
    except OSError:
        return b""


def scan(name):
    """The state of list `name`: what it names, the stat key of each statistic.json, and the
    first problem of its lines. Written to state_path(name) with a new mtime only when that
    changed, so that the file's mtime is when the list's experiments last changed (make's
    prerequisite of the title and table); what else it keeps to be fast (the list's text and
    stat, the folders watched) is written with the mtime it had.
    A file changed less than RACY_NS ago is racy, as git calls it: a second change within its
    timestamp's tick would leave its stat as it is, so its content's digest is kept too, and
    the next scan compares that. Racy folders are kept with no stat: looked at again."""
    path = list_path(name)
    old = load_state(name)
    listed = stat_or_none(path)
    watched = old and all(s is not None and stat_or_none(f) == s for f, s in old["watch"].items())
    expanded = None
    if watched and old["list"] == listed:
        text, names, watch, problems = old["text"], old["names"], old["watch"], old["problems"]
        stats = stat_all(names)
        if not indices_of(stats, MISSING):
            expanded = names, stats, watch, problems
    else:
        text = path.read_text(errors="replace")
        if watched and old["text"].endswith("\n") and text.startswith(old["text"]):  # lines appended
            expanded = expand_list(path, text, grown=old)
    # a file gone since, or the list changed: what it names is read again
    names, stats, watch, problems = expanded or expand_list(path, text)
    settled = time.time_ns() - RACY_NS
    racy = {names[i]: content_digest(names[i])
            for i, ctime in enumerate(memoryview(stats).cast("q")[1::4]) if ctime >= settled}
    watch = {folder: key if key is None or STAT.unpack(key)[1] < settled else None for folder, key in watch.items()}
    state = {"version": STATE_VERSION, "list": listed, "text": text, "watch": watch, "names": names,
             "stats": stats, "problems": problems, "racy": racy}
    meaning = ("names", "stats", "problems")
    if old is None or any(state[k] != old[k] for k in meaning) or \
            any((racy[n] if n in racy else content_digest(n)) != digest for n, digest in old["racy"].items()):
        write_cache(state_path(name), state)
    elif state != old:  # only what makes it fast: the title and table are as good as they were
        before = os.stat(state_path(name))
        write_cache(state_path(name), state)
        os.utime(state_path(name), ns=(before.st_atime_ns, before.st_mtime_ns))
    return state


def list_state(name):
    """(experiments, their stat keys as one string, RACY for a file changed too recently to
    trust its stat) of list `name` as scan() last found them (scanning now where there is no
    state); a UserError where a line is bad or names nothing."""
    state = load_state(name) or scan(name)
    if state["problems"]:
        raise UserError(state["problems"][0][1])
    stats = bytearray(state["stats"])
    for i, name in enumerate(state["names"]) if state["racy"] else ():
        if name in state["racy"]:
            stats[key_slice(i)] = RACY
    return state["names"], bytes(stats)


def main():
    scan(list_name(env("STATISTIC_STEM")))


if __name__ == "__main__":
    run(main)
