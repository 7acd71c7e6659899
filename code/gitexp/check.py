"""One run of `make check` (the template's machinery): the loop of main.py on your task, in the
temp folder scripts/check.py made, stopped after a step chosen from the epoch's length. It
notes every step's batch (a digest) and scalars, for scripts/check.py to compare runs.

    python <temp>/code/gitexp/check.py      # GITEXP_DIR, GITEXP_MODE, GITEXP_CHECK=full|half
"""
import functools
import hashlib
import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # code/: main.py and your files

import numpy as np  # noqa: E402
import torch  # noqa: E402

import config  # noqa: E402
import data  # noqa: E402
import main as loop  # noqa: E402
import task  # noqa: E402
from gitexp import contract, datastore, dist, protocol  # noqa: E402
from gitexp.protocol import ConfigError, Refused  # noqa: E402
from gitexp.stop import Stopped  # noqa: E402

NEEDED = {data: ("make_loaders",), task: ("configure_optimizers", "train_step", "evaluate")}
PHASES = {data: ("make_loaders", "facts"), task: ("configure_optimizers", "train_step", "evaluate", "after_evaluation")}


def stop_steps(steps_per_epoch, epochs):
    """(the step a check stops at first, the step it ends at), epochs cut to protocol.CHECK_EPOCH_STEPS:
    the restore in the middle of the second epoch, after the first's end and its evaluation;
    the end in the middle of the third, after the second's; fewer epochs, as far as they go."""
    steps = min(steps_per_epoch, protocol.CHECK_EPOCH_STEPS)
    middle = max(1, (steps + 1) // 2)
    if epochs == 1:
        return min(middle, max(1, steps - 1)), steps
    return steps + middle, min(2 * steps + middle, steps * epochs)


def digest(tree):
    """A batch's digest: every tensor's bytes, dtype and shape, every other value's repr."""
    total = hashlib.sha256()

    def walk(value):
        if torch.is_tensor(value):
            value = value.detach().cpu().contiguous()
            total.update(f"{value.dtype}{tuple(value.shape)}".encode())
            total.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        elif isinstance(value, np.ndarray):
            total.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                total.update(str(key).encode())
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        else:
            total.update(repr(value).encode())
    walk(tree)
    return total.hexdigest()[:16]


def missing_functions():
    import model
    needed = {**NEEDED, model: ("build_model",)}
    return [f"{module.__name__}.py has no {name}()" for module, names in needed.items() for name in names
            if not callable(getattr(module, name, None))]


def hyperparameters(optimizer):
    """Every optimizer's hyperparameters (lr, momentum, ...: its param_groups less the
    parameters), by name."""
    return {name: [{key: value for key, value in group.items() if key != "params"} for group in one.param_groups]
            for name, one in contract.named_optimizers(optimizer).items()}


def plain(value):
    """A value as JSON can hold it (a tensor lr as its number)."""
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def exact_scalars(scalars):
    """The step's scalars less those config.time_scalars declares as measuring time."""
    timed = set(getattr(config, "time_scalars", None) or ())
    return {name: value for name, value in contract.floats(scalars, "train_step").items() if name not in timed}


def watch(seen, captured, evaluations, world_size):
    """Wrap your functions (in this process only) to note what each step and each evaluation
    saw, and in which phase an error came."""
    for module, names in PHASES.items():
        for name in names:
            if callable(getattr(module, name, None)):
                setattr(module, name, in_phase(getattr(module, name), name, captured))
    loop.build_model = in_phase(loop.build_model, "build_model", captured)
    make_loaders, train_step, evaluation = data.make_loaders, task.train_step, loop.evaluation

    def noted_loaders(*args, **kwargs):
        train_batches, eval_sets = make_loaders(*args, **kwargs)
        max_steps = getattr(config, "max_steps", None)
        if max_steps:  # a stream: its evaluations, cut to a few steps apart, stand for the epochs' ends
            every = min(getattr(config, "eval_every", 0) or protocol.CHECK_EPOCH_STEPS, protocol.CHECK_EPOCH_STEPS)
            half, whole = stop_steps(every, -(-max_steps // every))
            half, whole = min(half, max(1, max_steps - 1)), min(whole, max_steps)
        else:
            half, whole = stop_steps(len(train_batches), config.epochs)
        os.environ[protocol.STOP_AT] = str(half if os.environ[protocol.CHECK] == "half" else whole)
        captured.update(eval_sets=eval_sets, half=half, whole=whole,
                        steps_per_epoch=None if max_steps else len(train_batches))
        return train_batches, eval_sets

    @functools.wraps(train_step)
    def noted_step(model, batch, optimizer, device, **state):
        before = digest(batch)
        scalars = train_step(model, batch, optimizer, device, **state)
        bare = getattr(model, "module", model)
        captured.update(model=bare, device=device, state=state)
        note = {"batch": before, "scalars": exact_scalars(scalars), "hyper": plain(hyperparameters(optimizer))}
        if world_size > 1:  # do the ranks' models stay one model?
            note["model"] = digest(list(bare.parameters()))
        seen.append(note)
        return scalars

    def noted_evaluation(run, began=None):
        captured["evaluated"] = True
        is_best = evaluation(run, began)
        evaluations.append({"step": run.position.step, "hyper": plain(hyperparameters(run.optimizer)),
                            "metrics": dict(run.position.last),
                            "state": digest({name: obj.state_dict() for name, obj in run.states.extra.items()})})
        return is_best

    data.make_loaders, task.train_step, loop.evaluation = noted_loaders, noted_step, noted_evaluation


def in_phase(function, name, captured):
    """`function`, noting while it runs that an error now is one of `name`'s."""
    @functools.wraps(function)  # its name and signature: the loop reads what it takes (evaluate's split)
    def called(*args, **kwargs):
        outer, captured["phase"] = captured.get("phase"), name
        answer = function(*args, **kwargs)
        captured["phase"] = outer
        return answer
    return called


def evaluate_once(captured, scalars):
    """Where the check's steps reached no evaluation: one, so the monitor is checked too."""
    model = captured["model"]
    model.eval()
    names = {f"train_{name}" for name in scalars}
    with torch.no_grad():
        for split, batches in contract.eval_sets(captured["eval_sets"]).items():
            told = contract.keywords(task.evaluate, split=split, step=0)
            answer = task.evaluate(model, batches, captured["device"], **captured["state"], **told)
            metrics = contract.floats(answer, f"evaluate ({split})", media={})
            names |= {f"{split}_{name}" for name in metrics}
    if config.monitor is not None and config.monitor not in names:
        raise ConfigError(f"monitor = {config.monitor!r} is not a metric (there are: {', '.join(sorted(names))}): "
                          "set monitor in code/config.py to one of them")


def run(exp_dir, rank, world_size, device, captured):
    seen, evaluations = [], []
    problems = missing_functions()
    if problems:
        raise ConfigError("; ".join(problems))
    watch(seen, captured, evaluations, world_size)
    try:
        loop.train(exp_dir, rank, world_size, device, protocol.mode())
    except Stopped:
        pass
    captured["phase"] = None
    if os.environ[protocol.CHECK] == "full" and not captured.get("evaluated") and seen:
        evaluate_once(captured, seen[-1]["scalars"])
    answer = {"seen": seen, "evaluations": evaluations, "steps_per_epoch": captured.get("steps_per_epoch"),
              "half": captured.get("half"), "whole": captured.get("whole"),
              "time_scalars": list(getattr(config, "time_scalars", None) or [])}
    if rank == 0 and hasattr(data, "prepare"):
        raw = (datastore.existing(config, data) or {}).get("raw") or {}
        answer["data_key_files"] = sorted(datastore.code_files(data)) + [f"the files of {name}" for name in sorted(raw)]
    (exp_dir / f"seen_{rank}_{os.environ[protocol.CHECK]}.json").write_text(json.dumps(answer))


def where_it_came(error, captured):
    """The error's phase (which of your functions, in the first run or after the restore) and
    the last line of your code (or the library's) it came from."""
    ours, code = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if ours not in Path(frame.filename).resolve().parents]
    yours = [frame for frame in frames if Path(frame.filename).resolve().parent == code
             and Path(frame.filename).name != "main.py"]
    places = [f"{Path(frame.filename).name}:{frame.lineno}" for frame in (yours[-1:] + frames[-1:])]
    place = "; ".join(dict.fromkeys(places))  # your line first, then the library's where it differs
    leg = "after the restore" if protocol.mode() == protocol.CONTINUE else "in the first run"
    phase = captured.get("phase")
    return f"in {phase}, {leg}: " if phase else f"{leg}: ", f" ({place})" if place else ""


def main():
    rank, world_size, device = dist.setup()
    captured = {}
    try:
        run(protocol.folder(), rank, world_size, device, captured)
        dist.barrier()
        dist.teardown()
    except (ConfigError, Refused) as problem:
        if rank == 0:
            loop.report_error(protocol.folder(), str(problem), sys.stderr)
        os._exit(protocol.FAILED)
    except Exception as error:
        phase, place = where_it_came(error, captured)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        loop.report_error(protocol.folder(), f"{phase}{type(error).__name__}: {first}{place}", sys.stderr)
        os._exit(protocol.FAILED)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
