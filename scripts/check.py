"""`make check [NPROC=2] [FIX=1]`: prove in seconds what the template promises for the working
tree's own task, in a temp folder, recording nothing (no tag, no experiment, no list).

  1. the contract: your functions present and answering in the shapes the loop needs, the
     values numbers, the monitor among the metrics, the evaluation sets' names allowed, the
     files the data's key follows (the runs below exercise each answer);
  2. exact resume: K steps uninterrupted, against K/2 steps, a checkpoint, a new process that
     restores it and K/2 more: the batches, the step scalars, the model, optimizer, schedule,
     every extra state and RNG compared bit for bit; the first thing that diverged is named,
     with its fix;
  3. the same across NPROC processes (torchrun, gloo);
  4. with FIX=1, two uninterrupted runs equal.
Exit 0 only when all hold; one line per finding. The steps: epochs cut to 12 steps
(protocol.CHECK_EPOCH_STEPS); the restore in the middle of the second, after the first
epoch's evaluation, the end in the middle of the third, after the second's; after each step and
evaluation every optimizer's hyperparameters are compared too, and with NPROC=2 the ranks' models.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli import UserError, run
from gitexp import protocol

RUNS = ("whole", "resumed", "again")  # the check's own runs' folders in the temp folder
FIXES = {
    "model": "a parameter or buffer the model changes outside its state_dict (a plain tensor attribute?)",
    "optimizer": "the optimizer state is not restored: return the optimizer configure_optimizers steps",
    "scheduler": "the schedule is not restored: return it from configure_optimizers, not a global",
    "extra": "its state_dict() does not hold all of its state (or load_state_dict() ignores some)",
    "rng": "something draws from the RNG in a way a continue cannot repeat",
}


def processes():
    value = os.environ.get("NPROC") or "1"
    if not value.isdigit() or not 1 <= int(value) <= 8:
        raise UserError(f"NPROC={value!r} is not a number of processes from 1 to 8: e.g. make check NPROC=2")
    return int(value)


def prepared_copy(root, temp):
    """The working tree's code/ (uncommitted changes and all), and links to everything else at
    the project's root, read where it is: prepared data, init_from's sources, raw data that a
    config value names relative to the project (raw/train.txt)."""
    shutil.copytree(root / "code", temp / "code", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "__data__").mkdir(exist_ok=True)  # data a check prepares is kept for the runs
    for path in root.iterdir():
        if path.name not in ("code", ".git", *RUNS):
            (temp / path.name).symlink_to(path.resolve())


def one_run(temp, name, how, nproc, mode="run", seed=None):
    """One run of gitexp/check.py into temp/<name>: (exit status, its error line or None, its notes)."""
    folder = temp / name
    if mode == "run":
        folder.mkdir()
        (folder / "statistic.json").write_text(json.dumps({"tag": "check", "id": name, "seed": seed, "fix": True}))
    driver = str(temp / "code" / "gitexp" / "check.py")
    command = [sys.executable, driver] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", driver]
    # one intra-op thread unless told otherwise: a check's steps are small, and on a shared
    # machine more threads mostly wait for each other (a run took 1 s with one, 29 s with two)
    env = dict(os.environ, **protocol.environment(folder, mode), PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env[protocol.CHECK] = how
    env.pop(protocol.STOP_AT, None)
    protocol.clear(folder)
    result = subprocess.run(command, cwd=temp, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        error = protocol.first_error(folder)
        return f"error: {error}" if error else f"error: the {name} run failed ({result.returncode}): " + \
            (result.stderr.strip().splitlines() or ["no message"])[-1], None
    return None, [json.loads((folder / f"seen_{rank}_{how}.json").read_text()) for rank in range(nproc)]


def first_difference(a, b, where):
    """The path of the first difference between two states (tensors compared bit for bit)."""
    import torch
    if torch.is_tensor(a) or torch.is_tensor(b):
        if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.dtype != b.dtype or a.shape != b.shape:
            return where
        nan = a.isnan() if a.is_floating_point() else None
        same = torch.equal(a, b) or nan is not None and torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])
        return None if same else where
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where} (keys {sorted(map(str, a.keys() ^ b.keys()))[:3]})"
        return next((d for key in a if (d := first_difference(a[key], b[key], f"{where}.{key}"))), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return where
        return next((d for n, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{where}[{n}]"))), None)
    return None if a == b or (a != a and b != b) else where


def latest_checkpoint(folder):
    """The newest checkpoint of a check's run, read by the template's own reader."""
    from gitexp.checkpoint import load_latest
    return load_latest(folder / "checkpoint")[0]


def first_change(a, b):
    """(optimizer name, group, key, a's value, b's value) of the first hyperparameter that
    differs between two notes of every optimizer's param_groups; None where they are equal."""
    for name in a:
        for group, (x, y) in enumerate(zip(a[name], b.get(name, []))):
            for key in x:
                if x[key] != y.get(key) and not (x[key] != x[key] and y.get(key) != y.get(key)):
                    return name, group, key, x[key], y.get(key)
    return None


def optimizer_words(change):
    """"the optimizer's lr", "the optimizer 'D''s betas (group 1)"."""
    name, group, key = change[:3]
    named = "" if name == "optimizer" else f" {name!r}"
    return f"the optimizer{named}'s {key}" + (f" (group {group})" if group else "")


def compare_steps(first, second, start, what, end=None):
    """The first step from `start` (to `end`) whose batch, scalars or optimizer hyperparameters
    differ between two runs' notes: (kind, words, step, rank), or (None, None, None, None).
    Rank 0 first, so a difference on another rank alone is one of that rank's state."""
    found = []
    for rank, (a, b) in enumerate(zip(first, second)):
        if len(a["seen"]) != len(b["seen"]):
            return "batch", f"the runs {what} took {len(a['seen'])} and {len(b['seen'])} steps", None, rank
        for n, (x, y) in enumerate(zip(a["seen"][start:end], b["seen"][start:end]), start + 1):
            on = f" on rank {rank}" if len(first) > 1 else ""
            if x["batch"] != y["batch"]:
                found.append(("batch", f"the batches {what} differ (step {n}{on})", n, rank))
                break
            change = first_change(x.get("hyper", {}), y.get("hyper", {}))
            if change:  # before the scalars: it says more (the lr itself, not the loss it changed)
                found.append(("hyper", f"after step {n}{on} {optimizer_words(change)} is {change[4]!r} against "
                                       f"{change[3]!r} in the uninterrupted run", n, rank))
                break
            if x["scalars"] != y["scalars"]:
                name = next(k for k in x["scalars"] if x["scalars"][k] != y["scalars"].get(k))
                found.append(("scalars", f"the training step {what} differs (step {n}{on}: {name} "
                                         f"{x['scalars'][name]!r} vs {y['scalars'].get(name)!r}) though its batch is "
                                         "the same", n, rank))
                break
    return min(found, key=lambda f: (f[2], f[3])) if found else (None, None, None, None)


def evaluation_before(whole, step):
    """The last evaluation of the uninterrupted run at or before `step`: (its step, the change
    of an optimizer's hyperparameters it made, or None), preferring the last one that made a
    change (in its own note, or at the step right after it); (None, None) without one."""
    notes, seen = whole[0].get("evaluations", []), whole[0]["seen"]
    last = (None, None)
    for note in (note for note in notes if 1 <= note["step"] <= step):
        before = seen[note["step"] - 1]["hyper"]
        after = seen[note["step"]]["hyper"] if note["step"] < len(seen) else note["hyper"]
        change = first_change(before, note["hyper"]) or first_change(before, after)
        last = (note["step"], change) if change or last[1] is None else last
    return last


def drift(notes):
    """Where a rank's model parts from rank 0's after a step, in words; None where they stay one."""
    if len(notes) < 2:
        return None
    for n, steps in enumerate(zip(*(rank["seen"] for rank in notes)), 1):
        apart = [rank for rank, note in enumerate(steps) if note.get("model") != steps[0].get("model")]
        if apart:
            return (f"after step {n} rank {apart[0]}'s model differs from rank 0's: the ranks train apart, so their "
                    "gradients are not averaged: call the model train_step is given (DDP averages through its "
                    "forward), or return each network's optimizer by name ({'G': opt_g, 'D': opt_d}) and the loop "
                    "averages each one's gradients")
    return None


def without_time(checkpoint, time_scalars):
    """A checkpoint less the metrics of the scalars that measure time (train_tokens_per_s)."""
    timed = {f"train_{name}" for name in time_scalars}
    for part in ("last", "best"):
        if isinstance(checkpoint.get(part), dict):
            checkpoint[part] = {k: v for k, v in checkpoint[part].items() if k not in timed}
    return checkpoint


def ranks_disagree(notes):
    """Where an evaluation's metrics differ between ranks, in words; None where they agree."""
    for evaluations in zip(*(rank.get("evaluations", []) for rank in notes)):
        first = evaluations[0]["metrics"]
        for rank, note in enumerate(evaluations[1:], 1):
            name = next((k for k in first if first[k] != note["metrics"].get(k)), None)
            if name:
                return (f"the evaluation at step {evaluations[0]['step']} gave {name} {first[name]!r} on rank 0 and "
                        f"{note['metrics'].get(name)!r} on rank {rank}: evaluate must answer the same on every rank "
                        "(what follows an evaluation decides on it): sum over the shards with "
                        "gitexp.dist.sum_over_ranks, and draw random evaluation batches alike on every rank (from a "
                        "torch.Generator seeded the same, not the global RNG, which is seeded by rank)")
    return None


def resume_findings(temp, whole, resumed, half):
    """What differs between the uninterrupted run and the restored one, first divergence first."""
    apart = drift(whole) or ranks_disagree(whole)
    if apart:
        return [apart]
    kind, said, _, _ = compare_steps(whole, resumed, 0, "before the checkpoint", half)
    if kind:
        return [f"{said}: two fresh starts differ, so nothing can resume exactly: draw every random number from "
                "torch, numpy or random (seeded by the loop) or from `generator`, never from the time or os.urandom"]
    kind, said, step, rank = compare_steps(whole, resumed, half, "after the restore")
    if kind == "batch":
        return [f"{said}: your batch source does not draw its order from `generator` (or the global torch RNG), or "
                "draws it lazily after the loop restored the RNG, or its workers persist (persistent_workers)"]
    if kind:
        evaluated, change = evaluation_before(whole, step - 1)  # the one nearest the first difference
        if rank:
            fix = ("a state of rank " f"{rank}'s is not in the checkpoint (rank 0's is): declare what differs by "
                   "rank in configure_optimizers' \"rank_state\"")
        elif change:
            said = (f"after the evaluation at step {evaluated} {optimizer_words(change)} went from {change[3]!r} to "
                    f"{change[4]!r} in the uninterrupted run; after the restore {said}")
            fix = "a state changed at evaluation is not in the checkpoint: declare it in configure_optimizers' \"state\""
        else:
            fix = ("a state train_step uses is not in the checkpoint: declare it in configure_optimizers' \"state\" "
                   "(an EMA, a GradScaler, a counter), or keep it in the model or optimizer"
                   + (f"; one an evaluation changes counts too (the last before: step {evaluated})"
                      if evaluated else ""))
        return [f"{said}: {fix}"]
    a, b = (without_time(latest_checkpoint(temp / name), whole[0]["time_scalars"]) for name in ("whole", "resumed"))
    for part in ("model", "optimizer", "scheduler", "extra", "rng", "last", "best", "step", "epoch"):
        where = first_difference(a.get(part), b.get(part), part)
        if where:
            fix = FIXES.get(part, "evaluate uses a state the checkpoint lacks: declare it in configure_optimizers' "
                                  "\"state\"")
            return [f"after the restore {where} differs from the uninterrupted run's: {fix}"]
    return []


def check():
    root = Path.cwd()
    nproc, fix = processes(), os.environ.get("FIX") in ("1",)
    if os.environ.get("FIX") not in (None, "", "0", "1"):
        raise UserError(f"FIX={os.environ['FIX']!r} is not 0 or 1")
    seed = int((root / "code" / "seed").read_text().strip() or 0)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gitexp-check-") as name:
        temp = Path(name)
        prepared_copy(root, temp)
        error, whole = one_run(temp, "whole", "full", nproc, seed=seed)
        if error:
            print(error, file=sys.stderr)
            return 1
        error, first = one_run(temp, "resumed", "half", nproc, seed=seed)
        if not error:
            error, second = one_run(temp, "resumed", "full", nproc, mode="continue")
            if error:  # the uninterrupted run went through the same steps: what the restore lost
                error += (": the uninterrupted run did not fail here, so a continue lost something your code keeps "
                          "outside the checkpoint (a module global?): declare it in configure_optimizers' \"state\"")
        if error:
            print(error, file=sys.stderr)
            return 1
        resumed = [dict(b, seen=a["seen"] + b["seen"]) for a, b in zip(first, second)]
        findings = resume_findings(temp, whole, resumed, whole[0]["half"])
        if fix and not findings:
            error, again = one_run(temp, "again", "full", nproc, seed=seed)
            kind, said, _, _ = compare_steps(whole, again, 0, "of two FIX=1 runs") if not error else (None, error, 0, 0)
            if said:
                findings.append(f"{said}: with FIX=1 two runs must be equal: something draws from an unseeded "
                                "source (the time, os.urandom, a fresh torch.Generator()) or a kernel is not "
                                "deterministic" if kind else said)
        for line in findings:
            print(f"error: {line}", file=sys.stderr)
        if findings:
            return 1
    info = whole[0]
    key_files = ", ".join(info.get("data_key_files") or ["nothing (no prepare)"])
    evaluated = [note["step"] for note in info.get("evaluations", [])]
    before = [step for step in evaluated if step <= info["half"]]
    after = [step for step in evaluated if step > info["half"]]
    restored = f"restored at step {info['half']}" + (f" after the evaluation at step {before[-1]}" if before else "")
    through = f"equal through step {info['whole']}" + (f" across the evaluation at step {after[0]}" if after else "")
    steps = info["steps_per_epoch"]
    span = f"{steps} steps an epoch, cut to {min(steps, protocol.CHECK_EPOCH_STEPS)}" if steps else \
        f"a stream of steps, evaluated every {min(evaluated[:1] or [protocol.CHECK_EPOCH_STEPS])}"
    print(f"check passed: the contract; exact resume ({restored}, {through}; {span}) in {nproc} process{'es' if nproc > 1 else ''}"
          f"{'; two FIX=1 runs equal' if fix else ''}; the data key follows {key_files}"
          f" ({time.perf_counter() - began:.1f}s)")
    return 0


if __name__ == "__main__":
    run(check)
