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

The rows come from title.py's fresh_rows (a file is read only where its stat changed). A row's
csv and .txt lines are kept where they were last written, the outputs themselves: the derived
file __statistic__/.deps/<LIST>.table holds each line's length and the stat of the file it was
read from, so an unchanged row is a slice of the old output, and one new experiment costs its
own line, not the table's. Input comes from the environment (STATISTIC_STEM or LIST, CHANGED).
"""
import gc
import hashlib
import math
import os
import shutil
import sys
from array import array
from itertools import accumulate
from pathlib import Path

from atomic import atomic_write, replacing
from cache import DAMAGED, DEPS, RACY, keys_of, read_cache, stat_key, stat_or_none, write_cache
from cli import UserError, env, run
from lists import list_name
from parallel import in_halves
from title import fresh_rows, row_values, shown_keys, title_path

TABLES = Path("__statistic__/table")
# the run facts that make two runs of one tag unlike (the seed is meant to differ)
POOLING_FACTS = ("run.data", "run.data_at_end", "run.torch", "run.host", "run.world_size", "run.threads", "run.fix")
TABLE_VERSION = 4
POOLING = ["run.seed", "run.status"]  # read from every row for the summary's pooling, shown or not


# ---- cells --------------------------------------------------------------------------------------

def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def csv_cell(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = repr(value) if isinstance(value, float) else str(value)
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def txt_cell(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value).replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0")


def render_row(experiment, row, keys):
    """A row's .txt cells (joined by NUL), csv line, cells' lengths (array bytes) and kinds:
    csv_cell, txt_cell and kind of each value, the usual types (a table has 100,000 rows) by
    hand."""
    csv_cells, txt_cells, kinds = [csv_cell(experiment)], [experiment], ["s"]
    for value in row_values(row, keys):
        kind_of = type(value)
        if kind_of is float and value == value:
            csv_cells.append(repr(value))
            txt_cells.append(format(value, ".6g"))
            kinds.append("n")
        elif kind_of is int or kind_of is float:  # a NaN is a number without a cell
            text = str(value) if kind_of is int else ""
            csv_cells.append(text)
            txt_cells.append(text)
            kinds.append("n")
        elif value is None:
            csv_cells.append("")
            txt_cells.append("")
            kinds.append("-")
        else:
            csv_cells.append(csv_cell(value))
            txt_cells.append(txt_cell(value))
            kinds.append(kind(value))
    return ("\0".join(txt_cells), (",".join(csv_cells) + "\n").encode(), array("I", map(len, txt_cells)).tobytes(),
            "".join(kinds))


def kind(value):
    """n: a number, -: nothing, s: anything else (a column with an s is not numeric)."""
    return "-" if value is None else "n" if is_number(value) else "s"


def txt_line(cells, layout):
    widths, numeric = layout
    return "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric)).rstrip() + "\n"


def relayout_plan(old, new):
    """How a .txt line written under layout `old` becomes one under `new`, where only widths
    changed: (offset, spaces to insert there, or to remove where negative) for each column
    whose width changed, rightmost first, so that each offset is still true when it is used.
    A left-aligned cell's padding changes after it, a right-aligned one's before it; the
    spaces removed are padding, since every cell fits its new width."""
    (old_widths, numeric), (new_widths, _) = old, new
    plan, start = [], 0
    for old_width, new_width, right in zip(old_widths, new_widths, numeric):
        if new_width != old_width:
            plan.append((start if right else start + min(old_width, new_width), new_width - old_width))
        start += old_width + 2
    return plan[::-1]


def relayout(line, plan):
    """Apply relayout_plan's `plan` to one line (ASCII bytes, its newline at the end): an offset
    at or past the line's end is trailing padding, which rstrip took away."""
    for at, change in plan:
        if at < len(line) - 1:
            line = line[:at] + b" " * change + line[at:] if change > 0 else line[:at] + line[at - change:]
    return line


def column_facts(header, lengths, kinds, facts=None):
    """Each column's (widths, whether it has a number, whether it has anything else) over rows
    whose cells' lengths (array) and kinds (str) come row after row; with `facts`, those of
    other rows to count in too."""
    columns = len(header)
    widths = [max(len(name), max(lengths[j::columns], default=0)) for j, name in enumerate(header)]
    numbers = ["n" in kinds[j::columns] for j in range(columns)]
    texts = ["s" in kinds[j::columns] for j in range(columns)]
    if facts:
        widths, numbers, texts = ([max(a, b) for a, b in zip(widths, facts[0])], [a or b for a, b in zip(numbers, facts[1])],
                                  [a or b for a, b in zip(texts, facts[2])])
    return [widths, numbers, texts]


def prefix_facts(header, old, kept):
    """column_facts of the old table's first `kept` rows: its own where the rows after them
    decided nothing (no widest cell, no kind only they had), else worked out again."""
    columns, facts = len(header), old["facts"]
    if kept == len(old["names"]):
        return facts
    lengths, kinds = old["lengths"][:kept * columns], old["kinds"][:kept * columns]
    tail = column_facts(header, old["lengths"][kept * columns:], old["kinds"][kept * columns:])
    widths = [width if tail[0][j] < width else max(len(header[j]), max(lengths[j::columns], default=0))
              for j, width in enumerate(facts[0])]
    numbers = [has if not tail[1][j] else "n" in kinds[j::columns] for j, has in enumerate(facts[1])]
    texts = [has if not tail[2][j] else "s" in kinds[j::columns] for j, has in enumerate(facts[2])]
    return [widths, numbers, texts]


def layout_of(facts):
    """(each column's width, whether it is right-aligned): a column with numbers and nothing
    else is; the first, exper, never is."""
    widths, numbers, texts = facts
    return widths, [j > 0 and n and not t for j, (n, t) in enumerate(zip(numbers, texts))]


# ---- the summary --------------------------------------------------------------------------------

def distinct_runs(experiments, seeds, statuses):
    """Which of one tag's rows are pooled, and how many repeats: of its finished runs, one per
    distinct seed, the lowest id of each (a run with no seed recorded counts as its own); the
    other finished runs are repeats (a rerun, a FIX=1 run of a seed already seen). A run not
    finished is neither."""
    order = sorted(range(len(experiments)), key=lambda i: int(experiments[i].rpartition("/")[2] or 0))
    finished = [i for i in order if statuses[i] in ("finished", None)]
    seen, pooled = set(), []
    for i in finished:
        if seeds[i] is None or seeds[i] not in seen:
            pooled.append(i)
            seen.add(seeds[i])
    return sorted(pooled), len(finished) - len(pooled)


def summary_row(tag, rows, keys, metrics, facts, hparams, pooled, repeats):
    """tag, count (distinct runs pooled), repeats, differs, each hparam (its value in the first
    pooled row), then mean and std of each metric column, over the pooled rows (lists of values
    in `keys` order; pooled: their indices)."""
    rows = [rows[i] for i in pooled]
    differs = [k[len("run."):] for k in facts if len({repr(r[keys.index(k)]) for r in rows}) > 1]
    summary = [tag, len(rows), repeats, " ".join(differs), *(rows[0][keys.index(k)] if rows else None for k in hparams)]
    for key in metrics:
        j = keys.index(key)
        values = [r[j] for r in rows if r[j] is not None and r[j] == r[j]]
        mean = math.fsum(values) / len(values) if values else None
        std = (math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
               if len(values) > 1 else None)
        summary += [mean, std]
    return summary


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
    columns = len(header)
    experiments, rows = fresh_rows(name)
    old = old_table(name, keys)
    runs = runs_of(experiments, rows, old)
    # the usual case: the old table's first rows are the new one's, and only a few rows follow
    # (new ones; one that changed since, the last run's, say): the old files are kept up to
    # there, and only those rows are made
    kept = runs[0][2] if old and runs and runs[0][:2] == [0, 0] else 0
    grown = kept > 0 and (len(experiments) - kept <= 1000 or all(o < 0 for _, o, _ in runs[1:]))
    if grown:
        runs = [[0, 0, kept]] + [[i, -1, 1] for i in range(kept, len(experiments))]

    # the new rows' cells, csv lines, cells' lengths and kinds
    starts = [start for start, o, _ in runs if o < 0]
    new = dict(zip(starts, in_halves(starts, lambda part: [render_row(experiments[i], rows[i], keys) for i in part])))
    new_lengths, new_kinds = array("I"), "".join(row[3] for row in new.values())
    for row in new.values():
        new_lengths.frombytes(row[2])
    if grown:
        lengths, kinds = old["lengths"][:kept * columns] + new_lengths, old["kinds"][:kept * columns] + new_kinds
        facts = column_facts(header, new_lengths, new_kinds, prefix_facts(header, old, kept))
    else:  # the old slices where rows are unchanged, the new ones in between
        lengths, kinds = array("I"), []
        for start, o, n in runs:
            if o >= 0:
                lengths += old["lengths"][o * columns:(o + n) * columns]
            else:
                lengths.frombytes(new[start][2])
            kinds.append(old["kinds"][o * columns:(o + n) * columns] if o >= 0 else new[start][3])
        kinds = "".join(kinds)
        facts = column_facts(header, lengths, kinds)
    layout = layout_of(facts)
    old_layout = layout_of(old["facts"]) if old else None

    csv_lengths, csv_parts = [], []
    for start, o, n in runs:
        if o >= 0:
            csv_lengths += old["csv_lengths"][o:o + n]
            if not grown:
                csv_parts.append(old_bytes(old, "csv")[old["csv_at"][o]:old["csv_at"][o + n]])
        else:
            csv_lengths.append(len(new[start][1]))
            csv_parts.append(new[start][1])
    txt_lengths, txt_parts = txt_lines(experiments, rows, keys, runs, new, old, layout, old_layout, grown)

    touched = None
    if grown and layout[1] == old_layout[1]:  # the tags of the rows after the kept ones, old and new
        touched = list(dict.fromkeys(e.rpartition("/")[0] for e in [*old["names"][kept:], *experiments[kept:]]))
    summary_text, summary = summarise(experiments, rows, keys, layout, old["summary"] if old else {}, touched, kept)
    csv_header = (",".join(map(csv_cell, header)) + "\n").encode()
    txt_header = txt_line(header, (layout[0], [False] * columns)).encode()
    table, stats, text = outputs(name)
    txt_body, csv_body = b"".join(txt_parts), b"".join(csv_parts)
    # all made before any is written; the csv, make's target, last
    atomic_write(stats, summary_text)
    if grown and layout == old_layout:
        atomic_extend(text, old["txt_at"][kept], txt_body)
    else:
        atomic_write(text, txt_header + txt_body)
    if grown:
        atomic_extend(table, old["csv_at"][kept], csv_body)
    else:
        atomic_write(table, csv_header + csv_body)
    write_cache(table_cache_path(name), {
        "version": TABLE_VERSION, "keys": list(keys), "names": experiments,
        "stats": b"".join(row[0] for row in rows), "header": [len(csv_header), len(txt_header)],
        "csv_lengths": csv_lengths, "txt_lengths": txt_lengths, "lengths": lengths.tobytes(), "kinds": kinds,
        "facts": facts, "summary": summary,
        "outputs": {"csv": stat_or_none(table), "txt": stat_or_none(text)}})
    print(f"table {table}: {len(experiments)} experiments, {len(keys)} columns (summary: {stats})")


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


def summarise(experiments, rows, keys, layout, old_summary, touched=None, kept_rows=0):
    """The summary csv's text, and {tag: ([its metric columns, a digest of its rows' names and
    stat keys], its line)} to keep: a tag's line is worked out again only where one of its
    rows changed. touched: where the table kept its first kept_rows rows, the tags of the rows
    after them (the others' lines are as they were, in their order)."""
    metrics = [k for k, right in zip(keys, layout[1][1:]) if right and k.startswith("metrics.")]
    facts = [k for k in POOLING_FACTS if k in keys]
    hparams = [k for k in keys if k.startswith("hparams.")]
    columns = ["tag", "count", "repeats", "differs", *hparams, *(f"{k}.{s}" for k in metrics for s in ("mean", "std"))]
    if touched is not None and len(touched) <= 10:  # a scan of the names a tag
        found = {tag: [i for i, e in enumerate(experiments) if e.startswith(f"{tag}/")] for tag in touched}
        # a tag first seen among the kept rows keeps its place; one first seen after, in order
        members = {tag: found.get(tag) for tag in old_summary if tag not in found or found[tag] and found[tag][0] < kept_rows}
        members.update(sorted(((t, m) for t, m in found.items() if m and m[0] >= kept_rows), key=lambda item: item[1][0]))
    else:
        members = {}
        for i, experiment in enumerate(experiments):
            members.setdefault(experiment.rpartition("/")[0], []).append(i)
    kept = {}
    for tag, group in members.items():
        if group is None:
            kept[tag] = old_summary[tag]
            continue
        digest = hashlib.blake2b("\n".join(experiments[i] for i in group).encode(), digest_size=16)
        digest.update(b"".join(rows[i][0] for i in group))
        signature = [metrics, digest.digest()]
        old = old_summary.get(tag)
        fresh = old is not None and old[0] == signature and all(rows[i][0] != RACY for i in group)
        kept[tag] = (signature, old[1] if fresh else None)

    def work(tags):
        lines = []
        for tag in tags:
            group = members[tag]
            seeds, statuses = zip(*(row_values(rows[i], POOLING) for i in group))
            pooled, repeats = distinct_runs([experiments[i] for i in group], seeds, statuses)
            row = summary_row(tag, [row_values(rows[i], keys) for i in group], keys, metrics, facts, hparams, pooled,
                              repeats)
            lines.append(",".join(map(csv_cell, row)) + "\n")
        return lines
    stale = [tag for tag, (_, line) in kept.items() if line is None]
    for tag, line in zip(stale, in_halves(stale, work, at_least=200)):
        kept[tag] = (kept[tag][0], line)
    return ",".join(map(csv_cell, columns)) + "\n" + "".join(line for _, line in kept.values()), kept


def show(name):
    changed, full = os.environ.get("CHANGED", ""), os.environ.get("FULL", "")
    if changed not in ("", "0", "1"):
        raise UserError(f"CHANGED={changed!r} is not 0 or 1: CHANGED=1 shows only the columns that differ")
    if full not in ("", "0", "1"):
        raise UserError(f"FULL={full!r} is not 0 or 1: FULL=1 prints the whole table")
    if changed == "1":
        show_changed(name)
    elif full == "1":
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
