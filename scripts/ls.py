"""List the experiments: `python scripts/ls.py` (make ls [TAG=x]).

    make ls         one line a tag: its ids, how many finished, running, stopped and failed,
                    the subject of the commit it ran
    make ls TAG=x   one line an id of x: status, epoch, seed, start time, and the run's own
                    monitored metric (hparams.monitor) with its best value; a note where it
                    repeats another run's seed or its data changed

A status is store.status_of's, the same everywhere: a run killed while running shows as
"stopped" (make continue takes it up), a run a process holds as "running".

One pass: every statistic.json is read once, by two processes side by side, and one git process
gives the subjects of all the commits. What the listing of all tags read is kept in the derived
file __statistic__/.deps/ls, with the stat of each file: a file whose stat is as it was is not
read again, so a listing costs a stat of each file and a read of each new or changed one.
TAG comes from the environment.
"""
import os
import re
import shutil
import subprocess

from cache import DAMAGED, DEPS, MISSING, RACY, keys_of, read_cache, settled_key, stat_all, write_cache
from cli import UserError, env, run
from gitexp.layout import OWN_FILES
from names import NAME, NAME_RULE, NUMBER
from parallel import in_halves
from store import RESULTS, load_statistic, status_of

NUMERIC = re.compile(r"-?[0-9][0-9.e+-]*")


CACHE_VERSION = 2


def experiments(tag=None):
    """tag/id of every experiment (or of one tag's), in tag order, then id order, and the stat
    keys of their statistic.json files."""
    tags = [tag] if tag else sorted(entry.name for entry in os.scandir(RESULTS)
                                    if entry.is_dir() and not entry.name.startswith(".")) if RESULTS.is_dir() else []
    found = []
    for name in tags:
        folder = RESULTS / name
        ids = sorted(int(e.name) for e in os.scandir(folder) if NUMBER.fullmatch(e.name)) if folder.is_dir() else []
        found += [f"{name}/{n}" for n in ids]
    keys = keys_of(stat_all(found))
    present = [(name, key) for name, key in zip(found, keys) if key != MISSING]  # an id whose run is starting
    return [name for name, _ in present], [key for _, key in present]


def essentials(statistic):
    """What a listing shows of one statistic.json (plain values, to pass between processes)."""
    monitor = (statistic.get("hparams") or {}).get("monitor") if isinstance(statistic.get("hparams"), dict) else None
    best = ((statistic.get("metrics") or {}).get("best") or {}).get(monitor) if isinstance(monitor, str) else None
    data = statistic.get("data") if isinstance(statistic.get("data"), dict) else {}
    notes = [f"{key} {statistic[key]}" for key in ("rerun_of", "repeat_of") if isinstance(statistic.get(key), str)]
    early = statistic.get("early_stop") if isinstance(statistic.get("early_stop"), dict) else {}
    if early:
        notes.insert(0, f"stopped early at step {early.get('step')}")
    legs = statistic.get("legs") if isinstance(statistic.get("legs"), list) else []
    if len(legs) > 1:
        notes.insert(0, f"continued {len(legs) - 1}x")
    if data.get("at_end") or data.get("accepted"):
        notes.append("data changed during the run" if data.get("at_end") else "data accepted as unchanged")
    counted_in_steps = isinstance(statistic.get("hparams"), dict) and statistic["hparams"].get("max_steps")
    progress = f"step {statistic.get('step', 0)}" if counted_in_steps else statistic.get("epoch")
    return [statistic.get(k) for k in ("id", "status")] + [progress] + [
        statistic.get(k) for k in ("seed", "start", "commit")] + [
        monitor if isinstance(monitor, str) else None, best if isinstance(best, (int, float)) else None,
        "; ".join(notes)]


def read_all(names):
    """essentials() of each experiment, and its file's stat key when read (RACY where it changed
    too recently to be trusted), read in two processes."""
    def read_part(part):
        return [(settled_key(stat), essentials(statistic)) for statistic, stat in map(load_statistic, part)]
    return in_halves(names, read_part, at_least=201)


def cached_read_all(names, keys):
    """read_all's essentials, from the cache where a file's stat key is as it was when read."""
    path = DEPS / "ls"
    try:
        cache = read_cache(path, CACHE_VERSION)
        known = dict(zip(cache["names"], zip(keys_of(cache["stats"]), cache["rows"], strict=True)))
    except DAMAGED:
        known = {}
    rows = [known.get(name) for name in names]
    rows = [row if row is not None and row[0] == key != RACY else None for row, key in zip(rows, keys)]
    stale = [i for i, row in enumerate(rows) if row is None]
    for i, row in zip(stale, read_all([names[i] for i in stale])):
        rows[i] = row
    if stale or len(known) != len(names):
        write_cache(path, {"version": CACHE_VERSION, "names": names,
                           "stats": b"".join(key for key, _ in rows), "rows": [r for _, r in rows]})
    return [r for _, r in rows]


def subjects(commits):
    """{commit: its subject} in one git process; commits git does not have are left out."""
    wanted = sorted({c for c in commits if isinstance(c, str) and re.fullmatch(r"[0-9a-f]{4,64}", c)})
    if not wanted:
        return {}
    out = subprocess.run(["git", "cat-file", "--batch"], input="".join(f"{c}\n" for c in wanted).encode(),
                         capture_output=True).stdout
    found, at = {}, 0
    for commit in wanted:
        end = out.find(b"\n", at)
        if end < 0:  # git failed (no repository): no subjects
            break
        header = out[at:end].split()
        at = end + 1
        if len(header) != 3:  # "<name> missing"
            continue
        size = int(header[2])
        body = out[at:at + size]
        at += size + 1
        if header[1] == b"commit":
            message = body.split(b"\n\n", 1)[1] if b"\n\n" in body else b""
            found[commit] = message.split(b"\n", 1)[0].decode(errors="replace")
    return found


def cell(value):
    """A value as jq's @tsv would print it (null and false: empty)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "true"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e17:
        return str(int(value))
    return str(value)


def aligned(rows):
    """Columns padded to their widest cell: numbers to the right (but in the header), text to the left."""
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) for i in range(max(map(len, rows)))]
    lines = []
    for r, row in enumerate(rows):
        cells = [(c.rjust(w) if r > 0 and NUMERIC.fullmatch(c) else c.ljust(w)) for c, w in zip(row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def ranges(ids):
    """0,1,2,5 as 0-2,5."""
    spans = []
    for n in sorted(ids):
        if spans and spans[-1][1] == n - 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def list_tags():
    names, keys = experiments()
    if not names:
        print("no experiments yet: make run TAG=x starts one")
        return
    rows = cached_read_all(names, keys)
    by_tag = {}
    for name, row in zip(names, rows):
        by_tag.setdefault(name.rsplit("/", 1)[0], []).append(row)
    latest = {tag: max((r[5] for r in group if isinstance(r[5], str)), default="") for tag, group in by_tag.items()}
    subject = subjects(latest.values())
    table = [["tag", "ids", "finished", "running", "stopped", "failed", "commit"]]
    for tag, group in by_tag.items():
        statuses = [status_of(f"{RESULTS}/{tag}/{r[0]}", r[1]) for r in group]
        counts = [statuses.count(status) for status in ("finished", "running", "stopped", "failed")]
        commit = latest[tag]
        table.append([tag, ranges(r[0] for r in group if isinstance(r[0], int)), *map(str, counts),
                      f"{commit[:10]} {subject.get(commit, '?')}"])
    print(aligned(table), end="")


def own_files(tag, number):
    """"N own files" where the run's task wrote some into its run_dir() (files/), counted now."""
    folder = f"{RESULTS}/{tag}/{number}/{OWN_FILES}"
    count = sum(len(files) for _, _, files in os.walk(folder))
    return f"{count} own file{'s' if count != 1 else ''}" if count else ""


def list_ids(tag):
    if not NAME.fullmatch(tag):
        raise UserError(f"TAG={tag} is not a tag: {NAME_RULE}")
    names, _ = experiments(tag)
    if not names:
        raise UserError(f"unknown tag {tag}: no experiment in {RESULTS}/{tag} (make ls lists the tags)")
    table = [["id", "status", "epoch", "seed", "start", "monitor", "best", "note"]]
    rows = [row for _, row in read_all(names)]
    for number, status, epoch, seed, start, _, monitor, best, note in sorted(rows, key=lambda r: r[0]):
        status = status_of(f"{RESULTS}/{tag}/{number}", status)
        best = round(best * 10000) / 10000 if best is not None else None
        note = "; ".join(n for n in (note, own_files(tag, number)) if n)
        table.append([cell(v) for v in (number, status, epoch, seed, start, monitor, best, note)])
    print(aligned(table), end="")


def main():
    tag = env("TAG")
    if tag:
        list_ids(tag)
    else:
        list_tags()
    if shutil.which("squeue"):  # on a Slurm cluster: the queued and running jobs, and their runs
        import slurm
        slurm.print_jobs()


if __name__ == "__main__":
    run(main)
