"""Tabulate a list's experiments: `python scripts/table.py write|show` (make table LIST=record).

    write  (the rule for __statistic__/table/<LIST>.csv)  one row per experiment: `exper`
           (tag/id), then the title's keys that are not commented out, in the title's order.
           Beside it: <LIST>.summary.csv, per tag the number of ids (count), `differs` (the run
           facts among data, torch, host, world_size and fix whose values differ between the
           tag's ids: its mean then pools unlike runs), and the mean and std (sample, n-1;
           empty for one id) of each numeric metrics.* column; and
           <LIST>.txt, the table aligned for reading. All three are written to temp files and
           renamed only when all are ready, the csv last.
    show   (make table)  print <LIST>.txt; with CHANGED=1, only the columns whose values
           differ between rows (the files keep every column).

A cell is its value as recorded, whatever the other rows hold: in the csv, a float as Python's
repr, an int as an int, None and NaN empty; in the .txt, floats to 6 significant digits. A
column is numeric (right-aligned, summarised) where it has a number and nothing but numbers.

The cells and layout are table_layout.py's, the summary table_summary.py's. The rows come
from rows.py's fresh_rows (a file is read only where its stat changed). A row's
csv and .txt lines are kept where they were last written, the outputs themselves: the derived
file __statistic__/.deps/<LIST>.table holds each line's length and the stat of the file it was
read from, so an unchanged row is a slice of the old output, and one new experiment costs its
own line, not the table's. Input comes from the environment (STATISTIC_STEM or LIST, CHANGED).
"""
import gc
import os
import shutil
import sys
from array import array
from itertools import accumulate
from pathlib import Path

from atomic import atomic_write, replacing
from cache import DAMAGED, DEPS, RACY, keys_of, read_cache, stat_key, stat_or_none, write_cache
from cli import check_switch, env, run
from lists import list_name
from parallel import in_halves
from table_layout import (column_facts, csv_cell, kind, layout_of, prefix_facts, relayout, relayout_plan, render_row,
                          txt_cell, txt_line)
from table_summary import summarise
from rows import fresh_rows, row_values
from title import shown_keys, title_path

TABLES = Path("__statistic__/table")
TABLE_VERSION = 4


# ---- the cache of what was written --------------------------------------------------------------

def table_cache_path(name):
    return DEPS / f"{name}.table"


def outputs(name):
    return tuple(TABLES / f"{name}{suffix}" for suffix in (".csv", ".summary.csv", ".txt"))


def old_table(name, keys):
    """The table as table.py last wrote it, where its files are as it left them and its columns
    are the same: the cache's record (names, stats: each row's stat key, lengths, kinds,
    facts, summary), and where each row's line starts in the files (csv_at, txt_at: one more
    at the end). None where there is nothing to reuse."""
    try:
        cache = read_cache(table_cache_path(name), TABLE_VERSION)
        if cache["keys"] != list(keys):
            return None
        table, _, text = outputs(name)
        cache["files"] = {"csv": table, "txt": text}
        for part, header in (("csv", cache["header"][0]), ("txt", cache["header"][1])):
            at = cache[f"{part}_at"] = list(accumulate(cache[f"{part}_lengths"], initial=header))
            stat = os.stat(cache["files"][part])
            if stat_key(stat) != cache["outputs"][part] or at[-1] != stat.st_size or len(at) != len(cache["names"]) + 1:
                return None
        cache["stats"] = keys_of(cache["stats"])
        cache["lengths"] = array("I", cache["lengths"])
        if not all(isinstance(line, str) for _, line in cache["summary"].values()):
            return None
        return cache
    except DAMAGED:
        return None


def old_bytes(old, part):
    """The old csv or txt file's bytes, read once."""
    if part not in old:
        old[part] = old["files"][part].read_bytes()
        if len(old[part]) != old[f"{part}_at"][-1]:
            raise RuntimeError(f"{old['files'][part]} changed while it was read: run make table again")
    return old[part]


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
    old table too, with files unchanged since, are one run (a slice of the old files); each
    row that is new or changed is a run of its own with old start -1."""
    runs, done = [], 0
    if old:  # the rows the two tables begin with: the usual case is nearly all of them
        keys = [row[0] for row in rows]
        done = min(common_prefix(old["names"], experiments), common_prefix(old["stats"], keys))
        if RACY in keys[:done]:
            done = keys.index(RACY)
        runs = [[0, 0, done]] if done else []
    index = {name: i for i, name in enumerate(old["names"][done:], done)} if old else {}
    for i in range(done, len(experiments)):
        experiment, row = experiments[i], rows[i]
        o = index.get(experiment, -1)
        if o >= 0 and (old["stats"][o] != row[0] or row[0] == RACY):
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
    new, lengths, kinds, facts = new_rows(experiments, rows, keys, header, runs, old, kept, grown)
    layout = layout_of(facts)
    old_layout = layout_of(old["facts"]) if old else None
    csv_lengths, csv_parts = csv_lines(runs, new, old, grown)
    txt_lengths, txt_parts = txt_lines(experiments, rows, keys, runs, new, old, layout, old_layout, grown)
    touched = None
    if grown and layout[1] == old_layout[1]:  # the tags of the rows after the kept ones, old and new
        touched = list(dict.fromkeys(e.rpartition("/")[0] for e in [*old["names"][kept:], *experiments[kept:]]))
    summary_text, summary = summarise(experiments, rows, keys, layout, old["summary"] if old else {}, touched, kept)
    csv_header = (",".join(map(csv_cell, header)) + "\n").encode()
    txt_header = txt_line(header, (layout[0], [False] * len(header))).encode()
    table, stats, text = outputs(name)
    # all made before any is written; the csv, make's target, last
    atomic_write(stats, summary_text)
    if grown and layout == old_layout:
        atomic_extend(text, old["txt_at"][kept], b"".join(txt_parts))
    else:
        atomic_write(text, txt_header + b"".join(txt_parts))
    if grown:
        atomic_extend(table, old["csv_at"][kept], b"".join(csv_parts))
    else:
        atomic_write(table, csv_header + b"".join(csv_parts))
    write_cache(table_cache_path(name), {
        "version": TABLE_VERSION, "keys": list(keys), "names": experiments,
        "stats": b"".join(row[0] for row in rows), "header": [len(csv_header), len(txt_header)],
        "csv_lengths": csv_lengths, "txt_lengths": txt_lengths, "lengths": lengths.tobytes(), "kinds": kinds,
        "facts": facts, "summary": summary,
        "outputs": {"csv": stat_or_none(table), "txt": stat_or_none(text)}})
    print(f"table {table}: {len(experiments)} experiments, {len(keys)} columns (summary: {stats})")


def plan(experiments, rows, old):
    """(runs_of's runs, how many of the old table's first rows are kept, whether the table only
    grew). The usual case: the old table's first rows are the new one's, and only a few rows
    follow (new ones; one that changed since, the last run's, say): the old files are kept up
    to there, and only those rows are made."""
    runs = runs_of(experiments, rows, old)
    kept = runs[0][2] if old and runs and runs[0][:2] == [0, 0] else 0
    grown = kept > 0 and (len(experiments) - kept <= 1000 or all(o < 0 for _, o, _ in runs[1:]))
    if grown:
        runs = [[0, 0, kept]] + [[i, -1, 1] for i in range(kept, len(experiments))]
    return runs, kept, grown


def new_rows(experiments, rows, keys, header, runs, old, kept, grown):
    """The new rows' render_row (by their run's start), and every row's cells' lengths and
    kinds with the columns' facts: the old slices where rows are unchanged."""
    columns = len(header)
    starts = [start for start, o, _ in runs if o < 0]
    new = dict(zip(starts, in_halves(starts, lambda part: [render_row(experiments[i], rows[i], keys) for i in part])))
    new_lengths, new_kinds = array("I"), "".join(row[3] for row in new.values())
    for row in new.values():
        new_lengths.frombytes(row[2])
    if grown:
        lengths, kinds = old["lengths"][:kept * columns] + new_lengths, old["kinds"][:kept * columns] + new_kinds
        return new, lengths, kinds, column_facts(header, new_lengths, new_kinds, prefix_facts(header, old, kept))
    lengths, kinds = array("I"), []
    for start, o, n in runs:
        if o >= 0:
            lengths += old["lengths"][o * columns:(o + n) * columns]
        else:
            lengths.frombytes(new[start][2])
        kinds.append(old["kinds"][o * columns:(o + n) * columns] if o >= 0 else new[start][3])
    kinds = "".join(kinds)
    return new, lengths, kinds, column_facts(header, lengths, kinds)


def csv_lines(runs, new, old, grown):
    """The csv lines' lengths, and the lines to write (only the new ones where the table grew:
    they are appended to the old file)."""
    lengths, parts = [], []
    for start, o, n in runs:
        if o >= 0:
            lengths += old["csv_lengths"][o:o + n]
            if not grown:
                parts.append(old_bytes(old, "csv")[old["csv_at"][o]:old["csv_at"][o + n]])
        else:
            lengths.append(len(new[start][1]))
            parts.append(new[start][1])
    return lengths, parts


def txt_lines(experiments, rows, keys, runs, new, old, layout, old_layout, grown):
    """The .txt lines' lengths, and the lines to write: only the new ones where the table grew
    and its layout is the same (they are appended to the old file); else every line, the old
    ones reused where the layout is the same, moved where only widths changed."""
    plan = relayout_plan(old_layout, layout) if old_layout and old_layout[1] == layout[1] else None
    padded = dict(zip(new, in_halves(list(new), lambda part: [txt_line(new[i][0].split("\0"), layout).encode()
                                                                     for i in part])))
    lengths, parts = [], []
    for start, o, n in runs:
        if o >= 0 and layout == old_layout:
            lengths += old["txt_lengths"][o:o + n]
            if not grown:
                parts.append(old_bytes(old, "txt")[old["txt_at"][o]:old["txt_at"][o + n]])
            continue
        for k in range(n):
            if o < 0:
                line = padded[start]
            else:
                line = old_bytes(old, "txt")[old["txt_at"][o + k]:old["txt_at"][o + k + 1]]
                if plan is not None and line.isascii():
                    line = relayout(line, plan)
                else:
                    values = row_values(rows[start + k], keys)
                    line = txt_line([experiments[start + k], *map(txt_cell, values)], layout).encode()
            parts.append(line)
            lengths.append(len(line))
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
    if changed:
        show_changed(name)
    elif full:
        with open(TABLES / f"{name}.txt", "rb") as f:
            sys.stdout.flush()
            while chunk := f.read(1 << 20):
                sys.stdout.buffer.write(chunk)
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

    table, summary, text = outputs(name)
    print("\n".join(summary_lines(summary, table)))


def show_changed(name):
    """The table with only the columns whose values differ between rows, aligned as the .txt."""
    keys = shown_keys(title_path(name))
    experiments, rows = fresh_rows(name)
    values = [row_values(row, keys) for row in rows]
    differ = [j for j in range(len(keys)) if len({repr(v[j]) for v in values}) > 1]
    header = ["exper", *(keys[j] for j in differ)]
    table = [[experiment, *(v[j] for j in differ)] for experiment, v in zip(experiments, values)]
    cells = [[e, *map(txt_cell, r[1:])] for e, r in zip(experiments, table)]
    lengths = array("I", (len(c) for row in cells for c in row))
    layout = layout_of(column_facts(header, lengths, "".join(kind(v) for row in table for v in row)))
    sys.stdout.write(txt_line(header, (layout[0], [False] * len(header))))
    sys.stdout.write("".join(txt_line(row, layout) for row in cells))
    if not differ:
        print(f"(all {len(keys)} columns are the same in every row)")


def main():
    commands = {"write": write, "show": show}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: python scripts/table.py write|show (settings come from the environment)")
    run(lambda: commands[sys.argv[1]](list_name(env("STATISTIC_STEM") or None)))


if __name__ == "__main__":
    main()
