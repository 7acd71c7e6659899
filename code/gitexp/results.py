"""Results in a notebook: a list's table and the runs' curves as pandas DataFrames.

    import sys; sys.path.insert(0, "code")      # in a notebook at the project's root
    from gitexp import results
    table = results.rows("finished")             # one row per run: exper, tag, id, hparams.*, run.*, metrics.*
    summary = results.summary("finished")        # per tag: count, repeats, hparams.*, metric mean/std
    curves = results.curves(["lr0.01", "base/0"])  # long: tag, id, step, name, value
    net = results.model("lr0.01/0")              # its model, by its own code, best weights, eval mode

rows and summary are make table's files (__statistic__/table/<list>.csv, .summary.csv), made
first by make when anything they come from changed. The curves are read from each run's
TensorBoard events files with TensorBoard's own reader (EventAccumulator).
"""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

RESULTS = Path("__result__")
TABLES = Path("__statistic__/table")


def project_root(root=None):
    """`root` as given; by default the working folder, or where it holds no __result__/ (a notebook
    in notebooks/) the project whose code/gitexp this module is."""
    if root is not None:
        return Path(root)
    here = Path(__file__).resolve().parents[2]
    return Path(".") if (Path(".") / RESULTS).is_dir() or not (here / RESULTS).is_dir() else here


def run_dir(tag, number, root="."):
    return Path(root) / RESULTS / tag / str(number)


def _table_files(name, root, make):
    if make:  # make's rule remakes them only where something they come from changed; with this
        # interpreter (the notebook's), which has what the table's scripts need
        subprocess.run(["make", "-s", f"{TABLES}/{name}.csv", f"PYTHON={sys.executable}"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL)
    return Path(root) / TABLES / f"{name}.csv", Path(root) / TABLES / f"{name}.summary.csv"


def rows(name="record", root=None, make=True):
    """The list's table: one row per experiment, the title's columns with their types, plus
    tag and id, and `repeat`: True for a run whose seed an earlier id of its tag already had
    (a rerun, a FIX=1 repeat), which the summary's mean leaves out."""
    root = project_root(root)
    table, _ = _table_files(name, root, make)
    frame = pd.read_csv(table)
    parts = frame["exper"].str.rpartition("/")
    frame.insert(1, "tag", parts[0])
    frame.insert(2, "id", parts[2].astype(int))
    seeds = frame["run.seed"] if "run.seed" in frame else [
        json.loads((run_dir(t, i, root) / "statistic.json").read_text()).get("seed") for t, i in zip(frame["tag"], frame["id"])]
    order = frame.assign(_seed=list(seeds)).sort_values("id", kind="stable")
    frame["repeat"] = order.duplicated(["tag", "_seed"]) & order["_seed"].notna()
    return frame


def summary(name="record", root=None, make=True):
    """The list's per-tag summary (make table's summary csv)."""
    return pd.read_csv(_table_files(name, project_root(root), make)[1])


def expand(runs, root="."):
    """(tag, id) of each of runs: "tag/id", or a bare tag for all its ids."""
    found = []
    for run in [runs] if isinstance(runs, str) else runs:
        tag, _, number = run.partition("/")
        folder = Path(root) / RESULTS / tag
        if not folder.is_dir():
            raise FileNotFoundError(f"no experiment {run} in {folder.parent.resolve()}: give root= the folder that "
                                    "holds __result__/")
        if number:
            found.append((tag, int(number)))
        else:
            found += [(tag, i) for i in sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())]
    return found


def one_run(run, root):
    """(tag, id) of one run: "tag/id", or a bare tag that has one id alone."""
    found = expand(run, root)
    if len(found) != 1:
        ids = ", ".join(str(number) for _, number in found) or "none"
        raise ValueError(f"{run} names {len(found)} runs (ids {ids}): name one, e.g. {run}/{found[0][1] if found else 0}")
    return found[0]


def run_curves(tag, number, root=".", names=None, steps=False):
    """One run's scalars as rows (tag, id, step, name, value); not the per-step step/* curves
    or the final ~best/~last values unless steps=True."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run_dir(tag, number, root) / "tensorboard"
    if not folder.is_dir():
        return []
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    rows = []
    for name in accumulator.Tags()["scalars"]:
        if names is not None and name not in names:
            continue
        if names is None and not steps and (name.startswith("step/") or name.startswith("~")):
            continue
        rows += [(tag, number, event.step, name, event.value) for event in accumulator.Scalars(name)]
    return rows


def curves(runs, root=None, names=None, steps=False):
    """The curves of runs ("tag/id" or a bare tag: all its ids) as one long DataFrame with
    columns tag, id, step, name, value; names: only these curves (e.g. ["val/acc"])."""
    root = project_root(root)
    rows = [row for tag, number in expand(runs, root) for row in run_curves(tag, number, root, names, steps)]
    return pd.DataFrame(rows, columns=["tag", "id", "step", "name", "value"])


def mean_curves(frame):
    """Per tag, curve and step: the mean and sample std (n-1; NaN for one run) over the runs
    that reached that step, and their number n. Runs of unequal length: a step past a run's
    end is averaged over the runs that have it."""
    grouped = frame.groupby(["tag", "name", "step"], sort=True)["value"]
    return grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()


def statistic(run, root=None):
    """A run's statistic.json ("tag/id")."""
    root = project_root(root)
    tag, number = one_run(run, root)
    return json.loads((run_dir(tag, number, root) / "statistic.json").read_text())


def snapshot_modules(run, root, names):
    """The modules `names` of a run's own code (__result__/<tag>/<id>/code/), imported apart: the
    modules they import from that folder too are this run's, never HEAD's code/ nor another run's,
    and sys.modules is left as it was (so two runs of different code load side by side)."""
    tag, number = one_run(run, root)
    code = (run_dir(tag, number, root) / "code").resolve()
    if not code.is_dir():
        raise FileNotFoundError(f"{tag}/{number} has no code/ snapshot in {code.parent}")
    saved, path = dict(sys.modules), list(sys.path)
    ours = {p.stem for p in code.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()} - {"gitexp"}
    for name in list(sys.modules):  # a module of the same name (HEAD's config, another run's model)
        if name.split(".")[0] in ours:
            del sys.modules[name]
    sys.path.insert(0, str(code))
    try:
        return [__import__(name) for name in names]
    finally:
        sys.path[:] = path
        for name in [n for n in sys.modules if n.split(".")[0] in ours]:
            del sys.modules[name]
        sys.modules.update({name: module for name, module in saved.items() if name.split(".")[0] in ours})


def config(run, root=None):
    """The run's config.py as it ran (its snapshot's module)."""
    return snapshot_modules(run, project_root(root), ["config"])[0]


def data_dir(run, root=None):
    """The prepared folder of the run's data key (__data__/<key>/), or None for data of its own."""
    root = project_root(root)
    key = (statistic(run, root).get("data") or {}).get("key")
    folder = root / "__data__" / key if key else None
    if folder is not None and not folder.is_dir():
        raise FileNotFoundError(f"{run}'s data {folder} is not here: copy it with __result__/, or prepare it with "
                                f"the run's code (git checkout {run.partition('/')[0]} -- code && make data)")
    return folder


def checkpoint_file(run, checkpoint="best", root=None):
    """The file of a run's checkpoint: "best", "last", an epoch number, or a file's name."""
    root = project_root(root)
    tag, number = one_run(run, root)
    folder = run_dir(tag, number, root) / "checkpoint"
    name = {"best": "epoch_best.pth", "last": "epoch_last.pth"}.get(checkpoint) if isinstance(checkpoint, str) else None
    path = folder / (name or (f"epoch_{checkpoint}.pth" if isinstance(checkpoint, int) else str(checkpoint)))
    if not path.exists():
        there = ", ".join(sorted(p.name for p in folder.glob("*.pth"))) if folder.is_dir() else "none"
        raise FileNotFoundError(f"{tag}/{number} has no checkpoint {checkpoint!r} ({path}); there are: {there}")
    return path


def model(run, checkpoint="best", device="cpu", root=None):
    """The model of a run ("tag/id"), built by the run's own code (its snapshot's model.py and
    config.py, with the data facts it recorded), its weights from `checkpoint` ("best", "last",
    an epoch number, or a checkpoint file's name) loaded as data (weights_only), in eval mode.
    Needs only __result__/: not HEAD's code, not the git tags."""
    import torch

    from gitexp.contract import takes_facts

    root = project_root(root)
    cfg, code = snapshot_modules(run, root, ["config", "model"])
    facts = (statistic(run, root).get("data") or {}).get("facts") or {}
    built = code.build_model(cfg, facts) if takes_facts(code.build_model) else code.build_model(cfg)
    state = torch.load(checkpoint_file(run, checkpoint, root), map_location=device, weights_only=True)
    built.load_state_dict(state["model"])
    return built.to(device).eval()
