"""One `make eval` (the template's machinery): recorded runs' checkpoints evaluated again. Each
run's model is built by its own code (its snapshot __result__/<tag>/<id>/code/: config.py,
model.py and gitexp/) with the data facts it recorded; its evaluation sets and evaluate() are
its own data.py, task.py and config.py too, or, where WITH names a commit, that commit's (the
launcher extracts its code/ into a temp folder). Run by scripts/eval.py from the project's root:

    python code/gitexp/evaluation.py    # GITEXP_EVAL: a JSON file of jobs; GITEXP_EVAL_FD: the answers' pipe

One process for all of a command's runs (torch is imported once); each run imports its code
anew, every module of another code folder forgotten first, and is seeded and set up as its
training was (seed, FIX mode's deterministic kernels, threads), as one process (rank 0 of 1).
Each job is answered with one JSON line: the metrics ({<set>_<metric>: value}), how many media
(gitexp.media's Image and Text, or any other value that is not a number) were left out, what
evaluate drew from (an RNG, a declared state), the checkpoint's position and the metrics it holds for it, the data
read; or the one-line error.
"""
import hashlib
import importlib
import json
import os
import random
import sys
import traceback
from pathlib import Path

sys.dont_write_bytecode = True  # nothing is written into a run's code snapshot
HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path.pop(0)  # this file's folder: the jobs' own gitexp is imported, never the one beside it

LOOP_NAMES = {"config", "data", "model", "task", "gitexp"}
CODE_FOLDERS = []  # every code folder a job has imported from


class EvalError(Exception):
    """A job that cannot be evaluated: its one line."""


def use_code(folder):
    """Import from the code folder `folder` from now on: every module imported from a code folder
    before (a run's config, data, task, model, its gitexp, what they import from their folder)
    forgotten, so that each job gets its own."""
    folders = [*CODE_FOLDERS, folder]
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name.split(".")[0] in LOOP_NAMES or any(path.startswith(f + os.sep) for f in folders):
            del sys.modules[name]
    sys.path[:] = [folder] + [p for p in sys.path if p not in folders]
    if folder not in CODE_FOLDERS:
        CODE_FOLDERS.append(folder)
    importlib.invalidate_caches()


def built_model(job, checkpoint, device, phase):
    """The run's model by its own config.py and model.py (use_code(job["code"]) first), with the
    data facts it recorded, its weights from the checkpoint."""
    import config
    import model as model_file
    from gitexp.contract import takes_facts

    phase[0] = "build_model"
    build = model_file.build_model
    net = build(config, job["facts"]) if takes_facts(build) else build(config)
    phase[0] = "loading the checkpoint's model"
    try:
        net.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1].strip()
        raise EvalError(f"the model does not load {Path(job['checkpoint']).name} ({reason})") from None
    return net.to(device)


def seeded(job):
    """Seeds, deterministic kernels (FIX=1) and threads as the run had them; its loader generator."""
    import torch
    from gitexp.checkpoint import seed_everything

    torch._C._set_deterministic_algorithms(False, warn_only=False)  # a job before may have set them
    torch.backends.cudnn.deterministic = False
    seed_everything(job["seed"], job["fix"])
    torch.set_num_threads(job["threads"])
    return torch.Generator().manual_seed(job["seed"])


def data_of(job, cfg, data_module):
    """(folder, its record) of the data to read: the run's own prepared folder __data__/<key>/
    where it is there, else what the code's data.py and config need (prepared where missing, as a
    run would: WITH's data, or the run's own where its folder was removed)."""
    from gitexp import datastore

    key = job.get("data_key")
    manifest = datastore.ROOT / key / datastore.MANIFEST if key else None
    if manifest is not None and manifest.is_file():
        return manifest.parent, json.loads(manifest.read_text())
    return datastore.ensure(cfg, data_module)


def declared_state(task, contract, cfg, net, train_batches, checkpoint, job):
    """(evaluate's keyword `state` where configure_optimizers declares one (an EMA), loaded from
    the checkpoint (rank 0's of a per-rank state), or {}; the names of a WITH commit's states the
    checkpoint does not hold, which start as configure_optimizers makes them)."""
    steps = getattr(cfg, "max_steps", None) or len(train_batches)
    _, _, extra, rank_extra = contract.optimizers(task.configure_optimizers(cfg, net, steps))
    if not (extra or rank_extra):
        return {}, []
    fresh = []
    for declared, saved in ((extra, checkpoint.get("extra") or {}), (rank_extra, (checkpoint.get("rank_extra") or [{}])[0])):
        if job.get("with"):  # newer code may declare a state (an evaluation generator) older runs lack
            fresh += sorted(set(declared) - set(saved))
        contract.load_extra({name: obj for name, obj in declared.items() if name not in fresh}, saved)
    return {"state": extra | rank_extra}, fresh


def digest(tree):
    """A state_dict's digest: every tensor's bytes, every other value's repr."""
    import torch

    total = hashlib.sha256()
    for value in tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else [tree]:
        if isinstance(value, (dict, list, tuple)):
            total.update(digest(value).encode())
        elif torch.is_tensor(value):
            total.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            total.update(repr(value).encode())
    return total.hexdigest()


def sources_now(generator, with_state):
    """What evaluate may draw from, as it is now: every RNG, and each declared state (an
    evaluation generator of the task's own), to tell which of them it changed."""
    import numpy as np
    import torch

    numpy_state = np.random.get_state()
    now = {"an RNG": (torch.get_rng_state().numpy().tobytes(), generator.get_state().numpy().tobytes(),
                      random.getstate(), numpy_state[1].tobytes(), numpy_state[2:])}
    for name, obj in (with_state.get("state") or {}).items():
        now[f"its declared state {name!r}"] = digest(obj.state_dict())
    return now


def numbers_of(answer, split):
    """(evaluate's numbers as floats, how many values were left out): gitexp.media's Image and
    Text, and anything else that is not a number."""
    if not isinstance(answer, dict):
        raise EvalError(f"evaluate ({split}) returned {type(answer).__name__}, not a dict of metrics")
    try:
        from gitexp.media import is_medium
    except ImportError:  # a run recorded before media
        def is_medium(value):
            return False
    numbers, left_out = {}, 0
    for name, value in answer.items():
        try:
            if is_medium(value):
                raise TypeError
            numbers[name] = float(value)
        except (TypeError, ValueError, RuntimeError):
            left_out += 1
    return numbers, left_out


def evaluated(job, checkpoint, phase):
    """One job's answer: its model, its data, each evaluation set's metrics."""
    import torch

    device = torch.device(job["device"])
    use_code(job["code"])
    generator = seeded(job)
    net = built_model(job, checkpoint, device, phase)
    if job.get("with"):
        use_code(job["with"])
    import config
    import data
    import task
    from gitexp import contract

    phase[0] = "preparing the data"
    folder, record = data_of(job, config, data)
    phase[0] = "make_loaders"
    train_batches, sets = data.make_loaders(config, folder, generator, job["seed"], 0, 1)
    phase[0] = "configure_optimizers"
    with_state, fresh = declared_state(task, contract, config, net, train_batches, checkpoint, job)
    metrics, left_out, drew = {}, 0, []
    net.eval()
    with torch.no_grad():
        for split, batches in contract.eval_sets(sets).items():
            phase[0] = f"evaluate ({split})"
            told = contract.keywords(task.evaluate, split=split, step=checkpoint.get("step"))
            before = sources_now(generator, with_state)
            numbers, left = numbers_of(task.evaluate(net, batches, device, **with_state, **told), split)
            after = sources_now(generator, with_state)
            drew += [source for source in before if before[source] != after[source] and source not in drew]
            metrics.update({f"{split}_{name}": value for name, value in numbers.items()})
            left_out += left
    return {"metrics": metrics, "media": left_out, "drew": drew, "fresh": fresh, "device": device.type,
            "data": record and {"key": record.get("key"), "fingerprint": record["fingerprint"]},
            "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"), "done": checkpoint.get("done", 0),
            "recorded": recorded_for(checkpoint)}


def recorded_for(checkpoint):
    """The metrics the checkpoint holds of the evaluation just before it was written (its
    position's `last`), where that evaluation was of these very weights; None where it was not
    (a checkpoint_every or stop checkpoint between evaluations)."""
    last = checkpoint.get("last") or {}
    if "step" in last:
        return last if last["step"] == checkpoint.get("step") else None
    return last if last and not checkpoint.get("done") and last.get("epoch") == checkpoint.get("epoch") else None


def where_it_came(error, phase):
    """The error's phase and the last line of a job's code (or the library's) it came from."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename).parent != HERE]
    yours = [frame for frame in frames if str(Path(frame.filename).parent) in CODE_FOLDERS]
    places = [f"{Path(frame.filename).name}:{frame.lineno}" for frame in (yours[-1:] + frames[-1:])]
    place = "; ".join(dict.fromkeys(places))
    first = (str(error).strip().splitlines() or [""])[0]
    return f"in {phase[0]}: {type(error).__name__}: {first}" + (f" ({place})" if place else "")


def answer(job):
    import torch

    phase = ["loading the checkpoint"]
    try:
        checkpoint = torch.load(job["checkpoint"], map_location="cpu", weights_only=True)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return {"error": f"the model does not load: {Path(job['checkpoint']).name} is not a readable checkpoint "
                         f"({type(error).__name__}: {reason})"}
    try:
        return evaluated(job, checkpoint, phase)
    except EvalError as problem:
        return {"error": str(problem)}
    except Exception as error:
        traceback.print_exc()  # into the output the launcher keeps for a failure
        if type(error).__name__ in ("ConfigError", "Refused"):
            return {"error": str(error)}
        return {"error": where_it_came(error, phase)}


def main():
    jobs = json.loads(Path(os.environ["GITEXP_EVAL"]).read_text())
    with os.fdopen(int(os.environ["GITEXP_EVAL_FD"]), "w") as out:
        for job in jobs:
            out.write(json.dumps(answer(job)) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
