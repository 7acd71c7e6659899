"""A list's rows, for its title and its table: each listed experiment's hparams, run facts, metrics
and make eval's latest metrics, flattened with dots (hparams.lr, run.seed, metrics.best.val_acc,
eval.test_acc; a list's items as hparams.sizes.0), kept by column: {"stats": the stat keys of
the files read, one string; "shape": each row's index into "shapes", the distinct key sequences;
"values": each row's marshal of its values}. By column, since a list has 100,000 rows and a
tuple a row costs more than the reading saves.

What the list names, and the stat of each statistic.json, come from scan.py (make's
prerequisite of the title and the table). The values read are kept in
__statistic__/.deps/<LIST>.rows, a derived file, with the stat of the file they came from: a
file whose stat the scan found as it was is not read again, so a new or changed experiment
costs one file read. The files to read are read with json, in parallel over chunks of them.
Deleting the .rows file costs one cold read, never a wrong title or table. Standard library only.
"""
import marshal
import os

from cache import DAMAGED, DEPS, RACY, STAT, indices_of, key_slice, read_cache, settled_key, write_cache
from facts import evaluated, flatten, table_facts
from parallel import in_parallel
from scan import list_state
from store import load_statistic

ROWS_VERSION = 6
CHUNK = 1000  # the least files a process reads


def flat_row(statistic):
    """The flattened hparams, run facts, metrics and make eval's latest metrics (eval.<set>_<metric>)
    of one statistic.json: the title's keys and the table's values."""
    flat = {}
    for part, tree in (("hparams", statistic.get("hparams")), ("run", table_facts(statistic)),
                       ("metrics", statistic.get("metrics")), ("eval", evaluated(statistic))):
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
    """(experiments, rows) as the .rows file keeps them; ([], empty rows) where it is missing or
    cannot be trusted (a derived file: a cold read)."""
    try:
        cache = read_cache(rows_path(name), ROWS_VERSION)
        rows = {part: cache[part] for part in ("stats", "shape", "shapes", "values")}
        if len(rows["stats"]) == STAT.size * len(cache["names"]) == STAT.size * len(rows["shape"]) \
                == STAT.size * len(rows["values"]) and max(rows["shape"], default=-1) < len(rows["shapes"]):
            return cache["names"], rows
    except DAMAGED:
        pass
    return [], {"stats": b"", "shape": [], "shapes": [], "values": []}


def save_rows(name, experiments, rows):
    write_cache(rows_path(name), {"version": ROWS_VERSION, "names": experiments, **rows})


def stat_at(rows, i):
    """Row i's stat key: of its file when read (RACY: read too soon after a change to keep)."""
    return rows["stats"][key_slice(i)]


def fresh_rows(name):
    """The list's experiments and their rows (by column, as above): from the .rows file where
    the scan found the file's stat as it was when read, else read now. A racy file (changed too
    recently to trust its stat) is always read again."""
    experiments, stats = list_state(name)
    names, cached = load_rows(name)
    known = len(names)
    if names == experiments[:known] and cached["stats"] == stats[:known * STAT.size]:
        rows = {"stats": bytearray(stats), "shape": cached["shape"] + [-1] * (len(experiments) - known),
                "shapes": cached["shapes"], "values": cached["values"] + [None] * (len(experiments) - known)}
        stale = list(range(known, len(experiments)))  # the usual case: a list that grew
    else:
        where = {experiment: i for i, experiment in enumerate(names)}
        old = [where.get(e, -1) for e in experiments]
        old = [o if o >= 0 and stat_at(cached, o) == stats[key_slice(i)] else -1
               for i, o in enumerate(old)]
        rows = {"stats": bytearray(stats), "shape": [cached["shape"][o] if o >= 0 else -1 for o in old],
                "shapes": cached["shapes"], "values": [cached["values"][o] if o >= 0 else None for o in old]}
        stale = [i for i, o in enumerate(old) if o < 0]
    stale = sorted(set(stale) | set(indices_of(stats, RACY)))
    shapes = {shape: i for i, shape in enumerate(rows["shapes"])}
    for i, (key, shape, values) in zip(stale, read_all([experiments[i] for i in stale])):
        rows["stats"][key_slice(i)] = key
        rows["shape"][i] = shapes.setdefault(shape, len(shapes))
        rows["values"][i] = values
    rows["stats"], rows["shapes"] = bytes(rows["stats"]), list(shapes)
    # kept again only for what the next reading can use: a racy row never is, and a list that
    # only grew finds its first rows here all the same
    if names != experiments[:known] or any(stat_at(rows, i) != RACY for i in stale):
        save_rows(name, experiments, rows)
    return experiments, rows


POSITIONS = {}  # (shape, keys) by identity: where each of keys is in shape (it holds both alive)


def row_values(rows, i, keys):
    """Row i's values of `keys`, in that order (None where it has no such key)."""
    shape = rows["shapes"][rows["shape"][i]]
    known = POSITIONS.get((id(shape), id(keys)))
    if known is None:
        where = {key: j for j, key in enumerate(shape)}
        known = POSITIONS[id(shape), id(keys)] = (shape, keys, [where.get(key) for key in keys])
    decoded = marshal.loads(rows["values"][i])
    return [None if j is None else decoded[j] for j in known[2]]


def shapes_in_order(rows):
    """The distinct key sequences of the rows, in order of first appearance."""
    return [rows["shapes"][s] for s in dict.fromkeys(rows["shape"])]
