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
import marshal
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


def read_rows(experiments, keys):
    """The experiments' rows, read by forked processes, one a CPU, while this one imports
    pandas (it takes about as long as reading 10,000 files): some 0.4 s saved on 2 CPUs."""
    workers = min(os.cpu_count() or 1, len(experiments) // 1000)
    if workers < 2:
        return [row_of(e, keys) for e in experiments]
    size = -(-len(experiments) // workers)
    readers = []
    for start in range(0, len(experiments), size):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the reader: rows (or the first error) through the pipe, then exit at once
            os.close(read_end)
            try:
                payload = ("rows", [row_of(e, keys) for e in experiments[start:start + size]])
            except UserError as problem:
                payload = ("error", str(problem))
            except BaseException as error:
                payload = ("crash", f"{type(error).__name__}: {error}")
            with os.fdopen(write_end, "wb") as f:
                marshal.dump(payload, f)
            os._exit(0)
        os.close(write_end)
        readers.append((pid, read_end))
    import pandas  # noqa: F401  (while the readers read)
    results = []
    for pid, read_end in readers:
        with os.fdopen(read_end, "rb") as f:
            try:
                results.append(marshal.load(f))
            except EOFError:
                results.append(("crash", "a reader process died"))
        os.waitpid(pid, 0)
    rows = []
    for kind, value in results:  # the first problem in list order, as a plain loop would meet it
        if kind == "error":
            raise UserError(value)
        if kind == "crash":
            raise RuntimeError(f"reading the statistic.json files failed: {value}")
        rows += value
    return rows


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


def texts(values):
    """A column's cells as text: floats to 6 significant digits, None and NaN empty."""
    return ["" if v is None or v != v else f"{v:.6g}" if isinstance(v, float) else str(v) for v in values]


def aligned(frame):
    """The frame's columns padded to their widest cell: numbers to the right, text to the left."""
    import pandas as pd

    padded = []
    for name in frame.columns:
        column = frame[name]
        cells = texts(column.tolist())
        width = max(len(name), *map(len, cells)) if cells else len(name)
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        padded.append([name.ljust(width)] + [c.rjust(width) if numeric else c.ljust(width) for c in cells])
    return "".join("  ".join(line).rstrip() + "\n" for line in zip(*padded))


def write(name):
    import pandas as pd

    keys = shown_keys(title_path(name))
    rows = read_rows(read_list(name), keys)
    frame = pd.DataFrame(rows, columns=["exper", *keys])
    table, stats, text = (TABLES / f"{name}{suffix}" for suffix in (".csv", ".summary.csv", ".txt"))
    pending = [(stats, summary(frame, keys).to_csv(index=False)), (text, aligned(frame)),
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
