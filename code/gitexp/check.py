"""One run of `make check` (the template's machinery): the loop of main.py on your task, in the
temp folder scripts/check.py made, stopped after a step chosen from the epoch's length. It
notes every step's batch (a digest) and scalars, for scripts/check.py to compare runs.

    python <temp>/code/gitexp/check.py      # GITEXP_DIR, GITEXP_MODE, GITEXP_CHECK=full|half
"""
import hashlib
import json
import os
import sys
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

SHORT_EPOCH = 64  # steps: an epoch this short is crossed; a longer one is checked over 16 steps
NEEDED = {data: ("make_loaders",), task: ("configure_optimizers", "train_step", "evaluate")}


def stop_steps(steps_per_epoch, epochs):
    """(the step a check stops at first, the step it ends at): the restore inside the first
    epoch and, for a short epoch, the end inside the next, so the epoch's end is crossed."""
    half, whole = (max(1, (steps_per_epoch + 1) // 2), steps_per_epoch + max(1, (steps_per_epoch + 1) // 2)) \
        if steps_per_epoch <= SHORT_EPOCH else (8, 16)
    whole = min(whole, steps_per_epoch * epochs)
    return min(half, max(1, whole - 1)), whole


def digest(tree):
    """A batch's digest: every tensor's bytes, dtype and shape, every other value's repr."""
    total = hashlib.sha256()

    def walk(value):
        if torch.is_tensor(value):
            value = value.detach().cpu().contiguous()
            total.update(f"{value.dtype}{tuple(value.shape)}".encode())
            total.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
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


def watch(seen, captured):
    """Wrap your functions (in this process only) to note what each step saw."""
    make_loaders, train_step, evaluate = data.make_loaders, task.train_step, task.evaluate

    def noted_loaders(*args, **kwargs):
        train_batches, eval_sets = make_loaders(*args, **kwargs)
        half, whole = stop_steps(len(train_batches), config.epochs)
        os.environ[protocol.STOP_AT] = str(half if os.environ[protocol.CHECK] == "half" else whole)
        captured.update(eval_sets=eval_sets, steps_per_epoch=len(train_batches), half=half, whole=whole)
        return train_batches, eval_sets

    def noted_step(model, batch, optimizer, device, **state):
        before = digest(batch)
        scalars = train_step(model, batch, optimizer, device, **state)
        captured.update(model=getattr(model, "module", model), device=device, state=state)
        seen.append({"batch": before, "scalars": contract.floats(scalars, "train_step")})
        return scalars

    def noted_evaluate(*args, **kwargs):
        captured["evaluated"] = True
        return evaluate(*args, **kwargs)

    data.make_loaders, task.train_step, task.evaluate = noted_loaders, noted_step, noted_evaluate


def evaluate_once(captured, scalars):
    """Where the check's steps reached no evaluation: one, so the monitor is checked too."""
    model = captured["model"]
    model.eval()
    names = {f"train_{name}" for name in scalars}
    with torch.no_grad():
        for split, batches in contract.eval_sets(captured["eval_sets"]).items():
            answer = task.evaluate(model, batches, captured["device"], **captured["state"])
            metrics = contract.floats(answer, "evaluate")
            names |= {f"{split}_{name}" for name in metrics}
    if config.monitor not in names:
        raise ConfigError(f"monitor = {config.monitor!r} is not a metric (there are: {', '.join(sorted(names))}): "
                          "set monitor in code/config.py to one of them")


def run(exp_dir, rank, world_size, device):
    seen, captured = [], {}
    problems = missing_functions()
    if problems:
        raise ConfigError("; ".join(problems))
    watch(seen, captured)
    try:
        loop.train(exp_dir, rank, world_size, device, protocol.mode())
    except Stopped:
        pass
    if os.environ[protocol.CHECK] == "full" and not captured.get("evaluated") and seen:
        evaluate_once(captured, seen[-1]["scalars"])
    answer = {"seen": seen, "steps_per_epoch": captured.get("steps_per_epoch"), "half": captured.get("half"),
              "whole": captured.get("whole")}
    if rank == 0 and hasattr(data, "prepare"):
        answer["data_key_files"] = sorted(datastore.code_files(data))
    (exp_dir / f"seen_{rank}_{os.environ[protocol.CHECK]}.json").write_text(json.dumps(answer))


def main():
    rank, world_size, device = dist.setup()
    try:
        run(protocol.folder(), rank, world_size, device)
        dist.barrier()
        dist.teardown()
    except (ConfigError, Refused) as problem:
        if rank == 0:
            loop.report_error(protocol.folder(), str(problem), sys.stderr)
        os._exit(protocol.FAILED)
    except Exception as error:
        where = next((f"{Path(frame.filename).name}:{frame.lineno}" for frame in reversed(
            __import__("traceback").extract_tb(error.__traceback__)) if "gitexp" not in frame.filename), "")
        loop.report_error(protocol.folder(), f"{type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                          f"{f' ({where})' if where else ''}", sys.stderr)
        os._exit(protocol.FAILED)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
