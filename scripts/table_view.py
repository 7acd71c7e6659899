"""The summary of a list's table as it fits a terminal (make table without FULL=1 or CHANGED=1).

Per tag (a sweep's point): the hparams whose values differ between tags, the count of distinct
runs pooled, the repeats left out (if any), and the monitored metric's best value (hparams.monitor,
metrics.best.<it>) as mean ± std; columns that do not fit WIDTH are left out and said so.
"""
import csv
import math

WIDTH = 120


def short(text):
    """A csv cell as it reads: floats to 4 significant digits, the rest as it is."""
    try:
        number = float(text)
    except ValueError:
        return text
    return text if text.lstrip("-").isdigit() else format(number, ".4g")


def monitored_column(header, rows):
    """The summary column of the monitored metric's best value (the first metrics.best.* one
    where hparams.monitor is not shown; the first metrics.last.* one where no run has a monitor)."""
    monitors = {row.get("hparams.monitor") for row in rows} - {None, ""}
    for monitor in sorted(monitors):
        if f"metrics.best.{monitor}.mean" in header:
            return f"metrics.best.{monitor}"
    # no monitor (a GAN's): the last evaluation is the result; its position (epoch, step) is no metric
    means = [k[:-len(".mean")] for k in header if k.endswith(".mean")]
    metrics = [k for k in means if k.rsplit(".", 1)[-1] not in ("epoch", "step")]
    chosen = [k for k in metrics if k.startswith("metrics.best." if monitors else "metrics.last.")]
    return (chosen or metrics or means or [None])[0]


def mean_std(row, metric):
    mean, std = row.get(f"{metric}.mean", ""), row.get(f"{metric}.std", "")
    if not mean:
        return ""
    return f"{float(mean):.4g} ± {float(std):.2g}" if std and not math.isnan(float(std)) else f"{float(mean):.4g}"


def aligned(table):
    widths = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in table]


def summary_lines(summary_path, table_path):
    """The lines to print for the summary csv at summary_path."""
    with open(summary_path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], list(reader)
    if not rows:
        return [f"(no experiments; the full table: {table_path})"]
    metric = monitored_column(header, rows)
    differing = [k for k in header if k.startswith("hparams.") and len({row[k] for row in rows}) > 1]
    repeats = any(row.get("repeats", "0") not in ("", "0") for row in rows)
    fixed = [["tag"], ["count"], *([["repeats"]] if repeats else []), [metric[len("metrics."):] if metric else "metric"]]
    for row in rows:
        fixed[0].append(row["tag"])
        fixed[1].append(row["count"])
        if repeats:
            fixed[2].append(row["repeats"])
        fixed[-1].append(mean_std(row, metric) if metric else "")
    columns = fixed[:1]
    used = sum(max(map(len, c)) + 2 for c in fixed)
    hidden = []
    for key in differing:
        column = [key[len("hparams."):], *(short(row[key]) for row in rows)]
        if used + max(map(len, column)) + 2 <= WIDTH:
            columns.append(column)
            used += max(map(len, column)) + 2
        else:
            hidden.append(key)
    columns += fixed[1:]
    lines = aligned([list(cells) for cells in zip(*columns)])
    if hidden:
        lines.append(f"({len(hidden)} differing hparams left out to fit {WIDTH} columns: {' '.join(hidden)})")
    lines.append("per tag: the distinct runs (one per seed) pooled, mean ± std (n-1)")
    lines.append(f"every column: {summary_path}")
    lines.append(f"every run: {table_path} (make table FULL=1 prints it)")
    return lines
