"""Write a list's title: `python scripts/title.py` (make title LIST=record).

The title __statistic__/title/<LIST>.json names the columns of `make table`: every key of
`hparams`, the run facts and `metrics` found in the listed experiments' statistic.json,
flattened with dots (hparams.lr, run.seed, metrics.best.val_acc; a list's items as
hparams.sizes.0). The run facts are what a run ran with besides its code: run.seed, run.fix,
run.world_size, run.data (the data's fingerprint, 12 digits), run.torch and run.host. Its format is a JSON
array of strings, one a line, where a line starting with // is a comment and a comma after
the last item is allowed (JSON with comments, as in VS Code's settings):

    [
      "hparams.lr",
    //  "hparams.dropout",
      "metrics.best.test_acc",
    ]

Edit it: comment a key out with // to hide its column, move lines to reorder the columns.
Made again (a new experiment on the list, a new key), it keeps your order and every
commented key commented; a new key is added uncommented after the key it follows in the
experiments, and a key no experiment has any more is dropped. Comment lines that are not a
key are not kept. On any error the title stays exactly as it was.

What the list names, and the stat of each statistic.json, come from scan.py (make's
prerequisite of the title). The values read are kept in __statistic__/.deps/<LIST>.rows, a
derived file, with the stat of the file they came from: a file whose stat the scan found as it
was is not read again, so a new or changed experiment costs one file read. The files to read
are read with json, in parallel over chunks of them. Deleting the .rows file costs one cold
read, never a wrong title or table. Input comes from the environment (STATISTIC_STEM, the
list's name, as the Makefile's rule sets it).
"""
import gc
import json
import marshal
import os
import re
from pathlib import Path

from atomic import atomic_write
from cache import DAMAGED, DEPS, RACY, keys_of, read_cache, settled_key, write_cache
from cli import UserError, env, run
from facts import flatten, table_facts
from lists import list_name
from parallel import in_parallel
from scan import list_state
from store import load_statistic

TITLES = Path("__statistic__/title")
HEADER = ("// The columns of make table, one key a line: comment a key out with // to hide its column,\n"
          "// move lines to reorder them. make title keeps both when it adds new keys.\n")
ROWS_VERSION = 5
CHUNK = 1000  # the least files a process reads


def title_path(name):
    return TITLES / f"{name}.json"


def parse_title(path):
    """The title's keys in file order, each as (key, commented out)."""
    try:
        lines = Path(path).read_text().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8: fix it, or delete it to make it again")
    entries, kept = [], []
    for line in lines:
        stripped = line.strip()
        commented = stripped.startswith("//")
        kept.append("" if commented else line)  # blank, not removed: error line numbers stay right
        try:
            key = json.loads((stripped[2:] if commented else stripped).strip().rstrip(","))
        except ValueError:
            continue
        if isinstance(key, str):
            entries.append((key, commented))
    text = re.sub(r",(\s*)\]\s*\Z", r"\1]", "\n".join(kept) + "\n")
    try:
        shown = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path} line {error.lineno}, column {error.colno}: {error.msg}: fix it, "
                        "or delete it to make it again")
    if not isinstance(shown, list) or not all(isinstance(k, str) for k in shown):
        raise UserError(f"{path} is not a JSON array of strings (one key a line): fix it, or delete it to make it again")
    # the array is the truth for shown keys; the lines give the order (and the commented keys)
    entries = [(k, c) for k, c in entries if c or k in shown]
    entries += [(k, False) for k in shown if (k, False) not in entries]
    merged = {}
    for key, commented in entries:  # a key written twice is commented out only if both are
        merged[key] = merged.get(key, True) and commented
    return list(merged.items())


def shown_keys(path):
    return list(dict.fromkeys(k for k, commented in parse_title(path) if not commented))


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


def union(order, keys):
    """`order`, with each of `keys` it lacks inserted after the key it follows in `keys`."""
    order = list(dict.fromkeys(order))
    placed = set(order)
    for i, key in enumerate(keys):
        if key in placed:
            continue
        before = next((keys[j] for j in range(i - 1, -1, -1) if keys[j] in placed), None)
        order.insert(order.index(before) + 1 if before is not None else 0, key)
        placed.add(key)
    return order


def merge(found, old_keys):
    """The new title's keys: the old title's order for keys still found, each new key after
    the key it follows in `found`."""
    present = set(found)
    return union([k for k in old_keys if k in present], found)


def render(keys, commented):
    lines = [f"{'//' if k in commented else '  '}  {json.dumps(k)}," for k in keys]
    return HEADER + "[\n" + "".join(f"{line}\n" for line in lines) + "]\n"


def main():
    gc.disable()  # no cycles worth collecting here; its passes cost a quarter of the reading
    name = list_name(env("STATISTIC_STEM") or None)
    path = title_path(name)
    old = parse_title(path) if path.exists() else []
    old_keys = [k for k, _ in old]
    commented = {k for k, c in old if c}
    _, rows = fresh_rows(name)
    found = []
    for shape in {id(shape): shape for _, shape, _ in rows}.values():  # a tuple's hash is not kept
        found = union(found, shape)
    keys = merge(found, old_keys)
    atomic_write(path, render(keys, commented))
    hidden = sum(k in commented for k in keys)
    new = len(set(keys) - set(old_keys) - commented)
    print(f"title {path}: {len(keys)} keys ({len(keys) - hidden} shown, {hidden} commented out"
          f"{f', {new} new' if old_keys and new else ''})")


if __name__ == "__main__":
    run(main)
