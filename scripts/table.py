"""Tabulate a list's experiments: `python scripts/table.py write|show` (make table LIST=record).

    write  (the rule for __statistic__/table/<LIST>.csv)  one row per experiment: `exper`
           (tag/id), then the title's keys that are not commented out, in the title's order.
           Beside it: <LIST>.summary.csv, per tag the number of ids (count) and the mean and
           std (sample, n-1; empty for one id) of each numeric metrics.* column; and
           <LIST>.txt, the table aligned for reading. All three are written to temp files and
           renamed only when all are ready, the csv last.
    show   (make table)  print <LIST>.txt; with CHANGED=1, only the columns whose values
           differ between rows (the files keep every column).

Input comes from the environment (STATISTIC_STEM or LIST, CHANGED). The statistic.json files
are read with json and one DataFrame is built at the end: pandas is only imported for that.
"""
import math
import os
import sys
from pathlib import Path

from record import UserError, atomic_write, list_name, read_list, read_statistic, run
from title import shown_keys, title_path

TABLES = Path("__statistic__/table")


def flatten(tree, prefix, out):
    """hparams/metrics leaves as `prefix.key` (a list's items as `prefix.key.0`): the keys of
    title.py's jq paths(scalars)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        if isinstance(value, (dict, list)):
            flatten(value, f"{prefix}{key}.", out)
        else:
            out[f"{prefix}{key}"] = value
    return out


def row_of(experiment, keys):
    statistic = read_statistic(experiment)
    flat = {}
    for part in ("hparams", "metrics"):
        if isinstance(statistic.get(part), (dict, list)):
            flatten(statistic[part], f"{part}.", flat)
    return [experiment] + [flat.get(k) for k in keys]


def summary(frame, keys):
    """Per tag: count, then mean and std of each numeric metric column."""
    import pandas as pd

    metrics = [k for k in keys if k.startswith("metrics.") and pd.api.types.is_numeric_dtype(frame[k])
               and not pd.api.types.is_bool_dtype(frame[k])]
    tags = frame["exper"].str.rpartition("/")[0].rename("tag")
    groups = frame[metrics].groupby(tags, sort=False)
    out = pd.DataFrame({"count": frame.groupby(tags, sort=False).size()})
    means, stds = groups.mean(), groups.std()
    for key in metrics:
        out[f"{key}.mean"] = means[key]
        out[f"{key}.std"] = stds[key]
    return out.reset_index()


def cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def aligned(header, rows):
    """Columns padded to their widest cell: text to the left, numbers to the right."""
    columns = list(zip(header, *rows)) if rows else [(h,) for h in header]
    texts = [[cell(v) for v in column] for column in columns]
    widths = [max(map(len, t)) for t in texts]
    right = [all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in column[1:])
             for column in columns]
    lines = []
    for i in range(len(texts[0]) if texts else 0):
        parts = [t[i].rjust(w) if r and i else t[i].ljust(w) for t, w, r in zip(texts, widths, right)]
        lines.append("  ".join(parts).rstrip())
    return "".join(f"{line}\n" for line in lines)


def write(name):
    import pandas as pd

    keys = shown_keys(title_path(name))
    rows = [row_of(e, keys) for e in read_list(name)]
    frame = pd.DataFrame(rows, columns=["exper", *keys])
    table, stats, text = (TABLES / f"{name}{suffix}" for suffix in (".csv", ".summary.csv", ".txt"))
    pending = [(stats, summary(frame, keys).to_csv(index=False)), (text, aligned(["exper", *keys], rows)),
               (table, frame.to_csv(index=False))]
    for path, content in pending:  # all made before any is written; the csv, make's target, last
        atomic_write(path, content)
    print(f"table {table}: {len(rows)} experiments, {len(keys)} columns (summary: {stats})")


def show(name):
    changed = os.environ.get("CHANGED", "")
    if changed not in ("", "0", "1"):
        raise UserError(f"CHANGED={changed!r} is not 0 or 1: CHANGED=1 shows only the columns that differ")
    if changed != "1":
        sys.stdout.write((TABLES / f"{name}.txt").read_text())
        return
    import pandas as pd

    frame = pd.read_csv(TABLES / f"{name}.csv", keep_default_na=False, na_values=[""])
    differ = [c for c in frame.columns[1:] if frame[c].nunique(dropna=False) > 1]
    shown = frame[["exper", *differ]].astype(object)
    sys.stdout.write(aligned(list(shown.columns), shown.where(shown.notna(), None).values.tolist()))
    if not differ:
        print(f"(all {len(frame.columns) - 1} columns are the same in every row)")


def main():
    commands = {"write": write, "show": show}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: python scripts/table.py write|show (settings come from the environment)")
    run(lambda: commands[sys.argv[1]](list_name(os.environ.get("STATISTIC_STEM") or None)))


if __name__ == "__main__":
    main()
