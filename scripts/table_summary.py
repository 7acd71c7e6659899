"""The table's summary (make table's <LIST>.summary.csv): per tag, its distinct finished runs
(one per seed) pooled, the repeats left out, the run facts that differ between the pooled runs,
each hparam, and the mean and std (sample, n-1) of each numeric metrics.* and eval.* (make eval)
column. A tag's line is worked out again only where one of its rows changed. Standard library
only.
"""
import hashlib
import math

from cache import RACY
from parallel import in_halves
from table_layout import csv_cell
from rows import row_values, stat_at

# the run facts that make two runs of one tag unlike (the seed is meant to differ)
POOLING_FACTS = ("run.data", "run.data_at_end", "run.torch", "run.host", "run.world_size", "run.threads", "run.fix")
POOLING = ["run.seed", "run.status"]  # read from every row for the summary's pooling, shown or not


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


def summarise(experiments, rows, keys, numeric, old_summary, touched=None, kept_rows=0):
    """The summary csv's text, and {tag: ([its metric columns, a digest of its rows' names and
    stat keys], its line)} to keep: a tag's line is worked out again only where one of its
    rows changed. numeric: whether each column (exper first) is numeric. touched: where the
    table kept its first kept_rows rows, the tags of the rows
    after them (the others' lines are as they were, in their order)."""
    metrics = [k for k, right in zip(keys, numeric[1:]) if right and k.startswith(("metrics.", "eval."))]
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
        digest.update(b"".join(stat_at(rows, i) for i in group))
        signature = [metrics, digest.digest()]
        old = old_summary.get(tag)
        fresh = old is not None and old[0] == signature and all(stat_at(rows, i) != RACY for i in group)
        kept[tag] = (signature, old[1] if fresh else None)

    def work(tags):
        lines = []
        for tag in tags:
            group = members[tag]
            seeds, statuses = zip(*(row_values(rows, i, POOLING) for i in group))
            pooled, repeats = distinct_runs([experiments[i] for i in group], seeds, statuses)
            row = summary_row(tag, [row_values(rows, i, keys) for i in group], keys, metrics, facts, hparams, pooled,
                              repeats)
            lines.append(",".join(map(csv_cell, row)) + "\n")
        return lines
    stale = [tag for tag, (_, line) in kept.items() if line is None]
    for tag, line in zip(stale, in_halves(stale, work, at_least=200)):
        kept[tag] = (kept[tag][0], line)
    return ",".join(map(csv_cell, columns)) + "\n" + "".join(line for _, line in kept.values()), kept
