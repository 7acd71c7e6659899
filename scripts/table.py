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

Input comes from the environment (STATISTIC_STEM or LIST, CHANGED). The rows are the ones
title.py has just read, where each file is provably unchanged since, else read again with json;
one DataFrame is built at the end: pandas is only imported for that.
"""
import csv
import gc
import json
import os
import sys
from pathlib import Path

from record import RESULTS, UserError, atomic_write, in_parallel, list_name, read_list, read_statistic, run
from title import ROWS, flat_row, shown_keys, title_path

TABLES = Path("__statistic__/table")
# the run facts that make two runs of one tag unlike (the seed is meant to differ)
POOLING_FACTS = ("run.data", "run.torch", "run.host", "run.world_size", "run.fix")


def row_of(experiment, keys):
    flat = flat_row(read_statistic(experiment))
    return [experiment] + [flat.get(k) for k in keys]


def cached_rows(name, experiments, keys):
    """The rows title.py read (ROWS/<LIST>.rows.json), for each experiment whose statistic.json
    has the same mtime_ns, ctime_ns, size and inode as when it was read (any write changes its
    ctime, which no one can set back); None for any other. A cache that cannot be read is no cache."""
    try:
        with open(ROWS / f"{name}.rows.json", "rb") as f:
            cache = json.load(f)
        if cache["version"] != 3:
            return [None] * len(experiments)
        entries = {}  # tag/id: (where each key's value is in its values (None: absent), entry)
        for part in cache["parts"]:
            wheres = []
            for shape in part["shapes"]:
                where = {key: i for i, key in enumerate(shape)}
                wheres.append(([where.get(k) for k in keys], len(shape)))
            for entry in part["rows"]:
                shape = entry[5]
                if type(shape) is not int or shape < 0 or len(entry[6]) != wheres[shape][1]:
                    raise ValueError("a row that is not title.py's")
                entries[entry[0]] = (wheres[shape][0], entry)
        rows = []
        for experiment in experiments:
            where, entry = entries.get(experiment, (None, None))
            try:
                stat = os.stat(f"{RESULTS}/{experiment}/statistic.json") if entry else None
            except OSError:
                stat = None
            if stat is None or entry[1:5] != [stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino]:
                rows.append(None)
                continue
            values = entry[6]
            rows.append([experiment] + [None if i is None else values[i] for i in where])
        return rows
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return [None] * len(experiments)


def read_rows(name, keys):
    """The list's rows: from title.py's cache where it is provably fresh, else read again."""
    experiments = read_list(name)
    rows = cached_rows(name, experiments, keys)
    return [row or row_of(experiment, keys) for experiment, row in zip(experiments, rows)]


def import_pandas():
    import pandas  # noqa: F401


def summary(frame, keys):
    """Per tag: count, then mean and std of each numeric metric column."""
    import pandas as pd

    metrics = [k for k in keys if k.startswith("metrics.") and pd.api.types.is_numeric_dtype(frame[k])
               and not pd.api.types.is_bool_dtype(frame[k])]
    tags = frame["exper"].str.rpartition("/")[0].rename("tag")
    groups = frame[metrics].groupby(tags, sort=False)
    out = pd.DataFrame({"count": frame.groupby(tags, sort=False).size()})
    facts = [k for k in POOLING_FACTS if k in frame.columns]
    varying = frame[facts].groupby(tags, sort=False).nunique(dropna=False) > 1
    out["differs"] = [" ".join(k[len("run."):] for k, differs in zip(facts, row) if differs)
                      for row in varying.itertuples(index=False)] if facts else ""
    means, stds = groups.mean(), groups.std()
    for key in metrics:
        out[f"{key}.mean"] = means[key]
        out[f"{key}.std"] = stds[key]
    return out.reset_index()


def texts(column):
    """A column's cells as text: floats to 6 significant digits, None and NaN empty."""
    import numpy as np

    values = column.tolist()
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else "O"
    if kind == "f":  # Python floats only: the general case below, faster
        cells = [format(v, ".6g") for v in values]
        return [c if c != "nan" else "" for c in cells] if "nan" in cells else cells
    if kind in "iub":  # ints and bools: never None or NaN
        return list(map(str, values))
    return ["" if v is None or v != v else f"{v:.6g}" if isinstance(v, float) else str(v) for v in values]


def aligned(frame):
    """The frame's columns padded to their widest cell: numbers to the right, text to the left."""
    import pandas as pd

    padded = []
    for name in frame.columns:
        column = frame[name]
        cells = texts(column)
        width = max(len(name), *map(len, cells)) if cells else len(name)
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        padded.append([name.ljust(width)] + [c.rjust(width) if numeric else c.ljust(width) for c in cells])
    return "".join("  ".join(line).rstrip() + "\n" for line in zip(*padded))


def write(name):
    gc.disable()  # as in title.py: no cycles worth collecting, and its passes cost time
    keys = shown_keys(title_path(name))
    # the rows are gathered by a forked process while this one imports pandas (some 0.3 s):
    # pandas is imported only after the fork, since numpy starts a thread
    _, rows = in_parallel([import_pandas, lambda: read_rows(name, keys)])
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["exper", *keys])
    table, stats, text = (TABLES / f"{name}{suffix}" for suffix in (".csv", ".summary.csv", ".txt"))
    pending = [(stats, summary(frame, keys).to_csv(index=False)), (text, aligned(frame)),
               (table, frame.to_csv(index=False))]
    for path, content in pending:  # all made before any is written; the csv, make's target, last
        atomic_write(path, content)
    print(f"table {table}: {len(rows)} experiments, {len(keys)} columns (summary: {stats})")
    gc.freeze()  # the collection at exit would still walk every object pandas made: 0.06 s


def show(name):
    changed = os.environ.get("CHANGED", "")
    if changed not in ("", "0", "1"):
        raise UserError(f"CHANGED={changed!r} is not 0 or 1: CHANGED=1 shows only the columns that differ")
    if changed != "1":
        sys.stdout.write((TABLES / f"{name}.txt").read_text())
    else:
        show_changed(name)
    with open(TABLES / f"{name}.summary.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("differs"):
                print(f"note: the ids of tag {row['tag']} differ in {row['differs']}: its mean and std in "
                      f"{TABLES / name}.summary.csv pool unlike runs (see the run.* columns)")


def show_changed(name):
    import pandas as pd

    frame = pd.read_csv(TABLES / f"{name}.csv", keep_default_na=False, na_values=[""])
    differ = [c for c in frame.columns[1:] if frame[c].nunique(dropna=False) > 1]
    sys.stdout.write(aligned(frame[["exper", *differ]]))
    if not differ:
        print(f"(all {len(frame.columns) - 1} columns are the same in every row)")


def main():
    commands = {"write": write, "show": show}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: python scripts/table.py write|show (settings come from the environment)")
    run(lambda: commands[sys.argv[1]](list_name(os.environ.get("STATISTIC_STEM") or None)))


if __name__ == "__main__":
    main()
