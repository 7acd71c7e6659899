"""Tabulate a list's experiments: `python scripts/table.py write|show` (make table LIST=record).

    write  (the rule for __statistic__/table/<LIST>.csv)  one row per experiment: `exper`
           (tag/id), then the title's keys that are not commented out, in the title's order.
           Beside it, <LIST>.summary.csv: per tag the number of distinct runs (count),
           `differs` (the run facts whose values differ between them: its mean then pools
           unlike runs), and the mean and std (sample, n-1; empty for one run) of each
           numeric metrics.* column. Both are written to temp files and renamed, the csv last.
    show   (make table)  print the summary as it fits 120 columns; FULL=1: every row, aligned;
           CHANGED=1: every row, only the columns whose values differ between rows.

A cell is its value as recorded, whatever the other rows hold: in the csv, a float as Python's
repr, an int as an int, None and NaN empty; printed aligned, floats to 6 significant digits. A
column is numeric (right-aligned, summarised) where it has a number and nothing but numbers.

The cells are table_layout.py's, the summary table_summary.py's. The rows come from rows.py's
fresh_rows (a file is read only where its stat changed). A row's csv line is kept where it was
last written: the derived file __statistic__/.deps/<LIST>.table holds each line's length and
the stat of the file it was read from, so an unchanged row is a slice of the old csv, and one
new experiment costs its own line, not the table's (at 100,000 experiments the scale bench's
goal of 1 s needs that). Input comes from the environment (STATISTIC_STEM or LIST, CHANGED).
"""
import gc
import os
import shutil
import sys
from itertools import accumulate
from pathlib import Path

from gitexp.files import atomic_write, replacing
from cache import DAMAGED, DEPS, RACY, STAT, indices_of, read_cache, stat_key, stat_or_none, write_cache
from cli import check_switch, env, run
from lists import list_name
from parallel import in_halves
from table_layout import aligned_text, column_kinds, csv_cell, numeric, render_row
from table_summary import summarise
from rows import fresh_rows, row_values, stat_at
from title import shown_keys, title_path

TABLES = Path("__statistic__/table")
TABLE_VERSION = 5


# ---- the cache of what was written --------------------------------------------------------------

def table_cache_path(name):
    return DEPS / f"{name}.table"


def outputs(name):
    return TABLES / f"{name}.csv", TABLES / f"{name}.summary.csv"


def old_table(name, keys):
    """The table as table.py last wrote it, where its csv is as it left it and its columns are
    the same: the cache's record (names, stats: each row's stat key, csv_lengths, kinds, facts,
    summary), and where each row's line starts in the csv (csv_at: one more at the end). None
    where there is nothing to reuse."""
    try:
        cache = read_cache(table_cache_path(name), TABLE_VERSION)
        if cache["keys"] != list(keys):
            return None
        cache["file"] = outputs(name)[0]
        at = cache["csv_at"] = list(accumulate(cache["csv_lengths"], initial=cache["header"]))
        stat = os.stat(cache["file"])
        if stat_key(stat) != cache["csv"] or at[-1] != stat.st_size or len(at) != len(cache["names"]) + 1:
            return None
        if not all(isinstance(line, str) for _, line in cache["summary"].values()):
            return None
        return cache
    except DAMAGED:
        return None


def old_bytes(old):
    """The old csv's bytes, read once."""
    if "bytes" not in old:
        old["bytes"] = old["file"].read_bytes()
        if len(old["bytes"]) != old["csv_at"][-1]:
            raise RuntimeError(f"{old['file']} changed while it was read: run make table again")
    return old["bytes"]


def common_prefix(a, b):
    """How many items two lists begin with alike: a binary search over slices compared in C."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def runs_of(experiments, rows, old):
    """The rows in runs [start, old start or -1, length]: rows that follow each other in the
    old table too, with files unchanged since, are one run (a slice of the old csv); each row
    that is new or changed is a run of its own with old start -1."""
    runs, done, stats = [], 0, rows["stats"]
    if old:  # the rows the two tables begin with: the usual case is nearly all of them
        done = min(common_prefix(old["names"], experiments), common_prefix(old["stats"], stats) // STAT.size)
        done = min([done, *indices_of(stats[:done * STAT.size], RACY)])
        runs = [[0, 0, done]] if done else []
    index = {name: i for i, name in enumerate(old["names"][done:], done)} if old else {}
    for i in range(done, len(experiments)):
        o, key = index.get(experiments[i], -1), stat_at(rows, i)
        if o >= 0 and (stat_at(old, o) != key or key == RACY):
            o = -1
        if o >= 0 and runs and runs[-1][1] >= 0 and runs[-1][1] + runs[-1][2] == o:
            runs[-1][2] += 1
        else:
            runs.append([i, o, 1])
    return runs


# ---- commands -----------------------------------------------------------------------------------

def write(name):
    gc.disable()  # as in title.py: no cycles worth collecting, and its passes cost time
    keys = shown_keys(title_path(name))
    header = ["exper", *keys]
    experiments, rows = fresh_rows(name)
    old = old_table(name, keys)
    runs, kept, grown = plan(experiments, rows, old)
    new, kinds, facts = new_rows(experiments, rows, keys, header, runs, old, kept, grown)
    csv_lengths, csv_parts = csv_lines(runs, new, old, grown)
    touched = None
    if grown:  # the tags of the rows after the kept ones, old and new
        touched = list(dict.fromkeys(e.rpartition("/")[0] for e in [*old["names"][kept:], *experiments[kept:]]))
    summary_text, summary = summarise(experiments, rows, keys, numeric(facts), old["summary"] if old else {},
                                      touched, kept)
    csv_header = (",".join(map(csv_cell, header)) + "\n").encode()
    table, stats = outputs(name)
    atomic_write(stats, summary_text)  # the csv, make's target, last
    if grown:
        atomic_extend(table, old["csv_at"][kept], b"".join(csv_parts))
    else:
        atomic_write(table, csv_header + b"".join(csv_parts))
    write_cache(table_cache_path(name), {
        "version": TABLE_VERSION, "keys": list(keys), "names": experiments,
        "stats": rows["stats"], "header": len(csv_header), "csv_lengths": csv_lengths,
        "kinds": kinds, "facts": facts, "summary": summary, "csv": stat_or_none(table)})
    print(f"table {table}: {len(experiments)} experiments, {len(keys)} columns (summary: {stats})")


def plan(experiments, rows, old):
    """(runs_of's runs, how many of the old table's first rows are kept, whether the table only
    grew). The usual case: the old table's first rows are the new one's, and only a few rows
    follow (new ones; one that changed since, the last run's, say): the old csv is kept up to
    there, and only those rows are made."""
    runs = runs_of(experiments, rows, old)
    kept = runs[0][2] if old and runs and runs[0][:2] == [0, 0] else 0
    grown = kept > 0 and (len(experiments) - kept <= 1000 or all(o < 0 for _, o, _ in runs[1:]))
    if grown:
        runs = [[0, 0, kept]] + [[i, -1, 1] for i in range(kept, len(experiments))]
    return runs, kept, grown


def new_rows(experiments, rows, keys, header, runs, old, kept, grown):
    """The new rows' render_row (by their run's start), and every row's cells' kinds with the
    columns' facts: the old ones where rows are unchanged."""
    columns = len(header)
    starts = [start for start, o, _ in runs if o < 0]
    new = dict(zip(starts, in_halves(starts, lambda part: [render_row(experiments[i], rows, i, keys) for i in part])))
    if grown:
        new_kinds = "".join(row[1] for row in new.values())
        kinds = old["kinds"][:kept * columns] + new_kinds
        if kept == len(old["names"]):
            facts = old["facts"]
        else:  # rows after the kept ones are gone or changed: what they held may be gone too
            facts = column_kinds(columns, old["kinds"][:kept * columns])
        return new, kinds, column_kinds(columns, new_kinds, facts)
    kinds = "".join(old["kinds"][o * columns:(o + n) * columns] if o >= 0 else new[start][1] for start, o, n in runs)
    return new, kinds, column_kinds(columns, kinds)


def csv_lines(runs, new, old, grown):
    """The csv lines' lengths, and the lines to write (only the new ones where the table grew:
    they are appended to the old file)."""
    lengths, parts = [], []
    for start, o, n in runs:
        if o >= 0:
            lengths += old["csv_lengths"][o:o + n]
            if not grown:
                parts.append(old_bytes(old)[old["csv_at"][o]:old["csv_at"][o + n]])
        else:
            lengths.append(len(new[start][0]))
            parts.append(new[start][0])
    return lengths, parts


def atomic_extend(path, keep, tail):
    """`path`'s first `keep` bytes, then `tail`, through a copy renamed over it: never half a
    file (the copy is the kernel's, some 20 ms for 100 MB)."""
    with replacing(path) as tmp:
        shutil.copyfile(path, tmp)
        with open(tmp, "r+b") as f:
            f.truncate(keep)
            f.seek(keep)
            f.write(tail)


def show(name):
    changed = check_switch("CHANGED", "shows only the columns that differ")
    full = check_switch("FULL", "prints the whole table")
    if changed or full:
        show_rows(name, only_differing=changed)
    else:
        show_summary(name)
    import csv

    with open(TABLES / f"{name}.summary.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("differs"):
                print(f"note: the ids of tag {row['tag']} differ in {row['differs']}: its mean and std in "
                      f"{TABLES / name}.summary.csv pool unlike runs (see the run.* columns)")


def show_summary(name):
    from table_view import summary_lines

    table, summary = outputs(name)
    print("\n".join(summary_lines(summary, table)))


def show_rows(name, only_differing):
    """Every row, aligned; `only_differing`: only the columns whose values differ between rows."""
    keys = shown_keys(title_path(name))
    experiments, rows = fresh_rows(name)
    values = [row_values(rows, i, keys) for i in range(len(experiments))]
    shown = range(len(keys))
    if only_differing:
        shown = [j for j in shown if len({repr(v[j]) for v in values}) > 1]
    table = [[experiment, *(v[j] for j in shown)] for experiment, v in zip(experiments, values)]
    sys.stdout.write(aligned_text(["exper", *(keys[j] for j in shown)], table))
    if only_differing and not shown:
        print(f"(all {len(keys)} columns are the same in every row)")


def main():
    commands = {"write": write, "show": show}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: python scripts/table.py write|show (settings come from the environment)")
    run(lambda: commands[sys.argv[1]](list_name(env("STATISTIC_STEM") or None)))


if __name__ == "__main__":
    main()
