"""A list's rows, for its title and its table: each listed experiment's hparams, run facts and
metrics, flattened with dots (hparams.lr, run.seed, metrics.best.val_acc; a list's items as
hparams.sizes.0), as (stat key, shape: its keys, marshal of its values).

What the list names, and the stat of each statistic.json, come from scan.py (make's
prerequisite of the title and the table). The values read are kept in
__statistic__/.deps/<LIST>.rows, a derived file, with the stat of the file they came from: a
file whose stat the scan found as it was is not read again, so a new or changed experiment
costs one file read. The files to read are read with json, in parallel over chunks of them.
Deleting the .rows file costs one cold read, never a wrong title or table. Standard library only.
"""
import marshal
import os

from cache import DAMAGED, DEPS, RACY, keys_of, read_cache, settled_key, write_cache
from facts import flatten, table_facts
from parallel import in_parallel
from scan import list_state
from store import load_statistic

ROWS_VERSION = 5
CHUNK = 1000  # the least files a process reads


def flat_row(statistic):
    """The flattened hparams, run facts and metrics of one statistic.json: the title's keys and
    the table's values."""
    flat = {}
    for part, tree in (("hparams", statistic.get("hparams")), ("run", table_facts(statistic)),
                       ("metrics", statistic.get("metrics"))):
        if isinstance(tree, (dict, list)):
            flatten(tree, f"{part}.", flat)
    return flat


def read_part(experiments):
    """Read the experiments' statistic.json files: the distinct key sequences (shapes) of their
    flat_rows in order of first appearance, and for each experiment (its stat key, RACY where
    the file changed too recently to trust it; its shape's index; marshal of its values)."""
    shapes, rows = {}, []
    for experiment in experiments:
        statistic, stat = load_statistic(experiment)
        flat = flat_row(statistic)
        shape = shapes.setdefault(tuple(flat), len(shapes))
        rows.append((settled_key(stat), shape, marshal.dumps(tuple(flat.values()))))
    return list(shapes), rows


def read_all(experiments):
    """read_part of the experiments, by one process a CPU, at least CHUNK files each: [(stat key,
    shape (its keys), marshal of values)]."""
    if not experiments:
        return []
    workers = max(1, min(os.cpu_count() or 1, len(experiments) // CHUNK))
    size = -(-len(experiments) // workers)
    chunks = [experiments[i:i + size] for i in range(0, len(experiments), size)]
    rows = []
    for shapes, part in in_parallel([lambda c=c: read_part(c) for c in chunks]):
        rows += [(key, shapes[shape], values) for key, shape, values in part]
    return rows


def rows_path(name):
    return DEPS / f"{name}.rows"


def load_rows(name):
    """(experiments, rows: (stat key, shape, marshal of values) each) as the .rows file keeps
    them; ([], []) where it is missing or cannot be trusted (a derived file: a cold read)."""
    try:
        cache = read_cache(rows_path(name), ROWS_VERSION)
        shapes = cache["shapes"]
        rows = list(zip(keys_of(cache["stats"]), [shapes[i] for i in cache["shape"]], cache["values"], strict=True))
        return (cache["names"], rows) if len(rows) == len(cache["names"]) else ([], [])
    except DAMAGED:
        return [], []


def save_rows(name, experiments, rows):
    shapes = {}  # by identity: a tuple's hash is worked out again each time
    cache = {"version": ROWS_VERSION, "names": experiments, "stats": b"".join(key for key, _, _ in rows),
             "shape": [shapes.setdefault(id(shape), (len(shapes), shape))[0] for _, shape, _ in rows],
             "values": [values for _, _, values in rows]}
    cache["shapes"] = [shape for _, shape in shapes.values()]
    write_cache(rows_path(name), cache)


def fresh_rows(name):
    """The list's experiments and, for each, (stat key, shape, marshal of values): from the
    .rows file where the scan found the file's stat as it was when read, else read now. A racy
    file (changed too recently to trust its stat) is always read again."""
    experiments, stats = list_state(name)
    names, cached = load_rows(name)
    if names == experiments[:len(names)] and [row[0] for row in cached] == stats[:len(names)]:
        rows = cached + [None] * (len(experiments) - len(names))  # the usual case: a list that grew
    else:
        where = {experiment: i for i, experiment in enumerate(names)}
        rows = [cached[where[e]] if e in where and cached[where[e]][0] == stat else None
                for e, stat in zip(experiments, stats)]
    stale = [i for i, (row, stat) in enumerate(zip(rows, stats)) if row is None or stat == RACY]
    for i, row in zip(stale, read_all([experiments[i] for i in stale])):
        rows[i] = row
    # kept again only for what the next reading can use: a racy row never is, and a list that
    # only grew finds its first rows here all the same
    if names != experiments[:len(names)] or any(rows[i][0] != RACY for i in stale):
        save_rows(name, experiments, rows)
    return experiments, rows


POSITIONS = {}  # (shape, keys) by identity: where each of keys is in shape (it holds both alive)


def row_values(row, keys):
    """A row's values of `keys`, in that order (None where it has no such key)."""
    _, shape, values = row
    known = POSITIONS.get((id(shape), id(keys)))
    if known is None:
        where = {key: i for i, key in enumerate(shape)}
        known = POSITIONS[id(shape), id(keys)] = (shape, keys, [where.get(key) for key in keys])
    decoded = marshal.loads(values)
    return [None if i is None else decoded[i] for i in known[2]]
