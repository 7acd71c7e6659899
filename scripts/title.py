"""Write a list's title: `python scripts/title.py` (make title LIST=record).

The title __statistic__/title/<LIST>.json names the columns of `make table`: every key of
`hparams`, the run facts and `metrics` found in the listed experiments' statistic.json,
flattened with dots (hparams.lr, run.seed, metrics.best.val_acc; a list's items as
hparams.sizes.0). The run facts are what a run ran with besides its code: run.seed, run.fix,
run.world_size, run.data (the data's fingerprint, 12 digits), run.torch and run.host. The eval.*
keys are make eval's: eval.<set>_<metric>, each metric's value in the run's latest evaluation
that has it, whichever checkpoint that was (statistic.json's evaluations). Its format is a JSON
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

The keys come from the list's rows (rows.py: each statistic.json read once, kept in
__statistic__/.deps/<LIST>.rows). Input comes from the environment (STATISTIC_STEM, the
list's name, as the Makefile's rule sets it).
"""
import gc
import json
import re
from pathlib import Path

from gitexp.files import atomic_write
from cli import UserError, env, run
from lists import list_name
from rows import fresh_rows, shapes_in_order

TITLES = Path("__statistic__/title")
HEADER = ("// The columns of make table, one key a line: comment a key out with // to hide its column,\n"
          "// move lines to reorder them. make title keeps both when it adds new keys.\n")


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
    for shape in shapes_in_order(rows):
        found = union(found, shape)
    keys = merge(found, old_keys)
    atomic_write(path, render(keys, commented))
    hidden = sum(k in commented for k in keys)
    new = len(set(keys) - set(old_keys) - commented)
    print(f"title {path}: {len(keys)} keys ({len(keys) - hidden} shown, {hidden} commented out"
          f"{f', {new} new' if old_keys and new else ''})")


if __name__ == "__main__":
    run(main)
