"""Evaluate recorded runs again: `python scripts/eval.py` (make eval EXP="x/3 y" [CKPT=best|last|<epoch>]
[WITH=<commit-ish>] [GPUS=0]).

Each run named (tag/id, or a bare tag: all its ids) is evaluated on its evaluation sets with its
checkpoint (CKPT: best by default, last, an epoch number, or a checkpoint file's name), by
code/gitexp/evaluation.py in one process for all of them. Without WITH: the run's own code and
data (its snapshot, its recorded data key, seed, FIX mode and threads), so a FIX=1 run's numbers
are those its training recorded for that checkpoint, bit for bit, and the line says so or names
what differs. With WITH: that commit's data.py, task.py and config.py (a new test set) applied
to the run's model, built by the run's own code. On CPU (GPUS=0: that GPU).

Each evaluation is appended to the run's statistic.json under `evaluations` (gitexp/schema.py:
checkpoint, file, epoch, step, commit of the evaluation's code, data, time, device, metrics),
nothing else in it changing; one line a run. A run running now, an unknown run, a missing
checkpoint or a WITH that is not a commit is refused before anything runs, with one line and
nothing changed. A run being evaluated holds its lock, as a run does (make continue waits).
Input comes from the environment (EXP, CKPT, WITH, GPUS). Standard library only.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cli import UserError, env, run
from conditions import parse_devices, python, thread_count
from gitexp.layout import EPOCH_FILE, STEP_FILE
from launch import child_environment, now
from lists import parse_word
from names import NUMBER
from repo import commit_of, describe, extract_code
from store import RESULTS, expand, hold, read_statistic, status_of, write_statistic

DRIVER = Path(__file__).resolve().parents[1] / "code" / "gitexp" / "evaluation.py"


def checkpoint_named(value):
    """CKPT: "best" (default), "last", an epoch number, or a checkpoint file's name."""
    value = value or "best"
    if value in ("best", "last") or EPOCH_FILE.fullmatch(value) or STEP_FILE.fullmatch(value):
        return value
    if NUMBER.fullmatch(value):
        return int(value)
    raise UserError(f"CKPT={value!r} is not best, last, an epoch number or a checkpoint's file name "
                    "(epoch_3.pth, step_2_40.pth)")


def runs_named(text):
    """The runs EXP names, each once, in order: tag/id, or a bare tag for all its ids."""
    if not text.split():
        raise UserError('EXP is missing: make eval EXP="x/3 y" evaluates those runs\' checkpoints')
    found = []
    for word in text.split():
        tag, number = parse_word("EXP", word)
        named = expand(tag, number)
        if not named:
            raise UserError(f"EXP: there is no experiment {word} (make ls{f' TAG={tag}' if number is not None else ''} "
                            "lists them)")
        found += [name for name in named if name not in found]
    return found


def looked_at(name, checkpoint):
    """What evaluating run `name` needs, checked: its record, folder and checkpoint file."""
    from gitexp import results  # its checkpoint_file: the notebook's own rule for a checkpoint's name

    folder = RESULTS / name
    statistic = read_statistic(name)
    if status_of(folder, statistic.get("status")) == "running":
        raise UserError(f"{name} is running now: evaluate it once it has finished or stopped (make ls TAG="
                        f"{statistic.get('tag')})")
    if not (folder / "code").is_dir():
        raise UserError(f"{name} has no code snapshot {folder}/code/: its model cannot be built by its own code")
    try:
        path = results.checkpoint_file(name, checkpoint)
    except FileNotFoundError as error:
        raise UserError(str(error))
    return {"name": name, "folder": folder, "statistic": statistic, "file": path.resolve()}


def with_code(text, temp):
    """(the commit WITH names, the folder its code/ was extracted into); None without WITH."""
    if not text:
        return None
    commit = commit_of(text)
    if commit is None:
        raise UserError(f"WITH={text!r} is not a commit of this repository (a tag, branch or hash: git log --oneline)")
    try:
        extract_code(commit, temp)
    except subprocess.CalledProcessError:
        raise UserError(f"WITH={text}: commit {describe(commit)} has no code/ folder")
    missing = [name for name in ("config.py", "data.py", "task.py") if not (temp / "code" / name).is_file()]
    if missing:
        raise UserError(f"WITH={text}: commit {describe(commit)} has no code/{', code/'.join(missing)}")
    return commit, str((temp / "code").resolve())


def device():
    """("cpu" or "cuda", CUDA_VISIBLE_DEVICES): CPU unless GPUS names one GPU."""
    if env("NPROC") or env("NNODES"):
        raise UserError("make eval runs one process: leave NPROC and NNODES out (GPUS=0: on that GPU)")
    if not env("GPUS"):
        return "cpu", ""
    processes, _, _, visible = parse_devices(env("GPUS"), "", "")
    if processes > 1:
        raise UserError(f"GPUS={env('GPUS')}: make eval uses one GPU, e.g. GPUS=0")
    return "cuda", visible


def job_of(run_info, kind, with_folder):
    statistic = run_info["statistic"]
    data = statistic.get("data") or {}
    return {"code": str((run_info["folder"] / "code").resolve()), "with": with_folder,
            "checkpoint": str(run_info["file"]), "seed": statistic["seed"], "fix": statistic["fix"],
            "threads": (statistic.get("conditions") or {}).get("threads") or thread_count(1),
            "facts": data.get("facts") or {}, "data_key": None if with_folder else data.get("key"), "device": kind}


def answers(jobs, visible, temp):
    """The driver's answer to each job, as each comes; its own output kept in a file, shown
    where it ended without answering them all."""
    (temp / "jobs.json").write_text(json.dumps(jobs))
    read_end, write_end = os.pipe()
    child_env = child_environment(visible, jobs[0]["threads"], GITEXP_EVAL=str(temp / "jobs.json"),
                                  GITEXP_EVAL_FD=str(write_end), TQDM_DISABLE="1")
    child_env.pop("PYTHONPATH", None)  # the runs' own code, never HEAD's code/
    with open(temp / "output", "w+") as output:
        child = subprocess.Popen([python(), str(DRIVER)], env=child_env, pass_fds=(write_end,), stdout=output,
                                 stderr=subprocess.STDOUT)
        os.close(write_end)
        count = 0
        with os.fdopen(read_end) as lines:
            for line in lines:
                count += 1
                yield json.loads(line)
        child.wait()
        if count < len(jobs):
            output.seek(0)
            said = [line for line in output.read().splitlines() if line.strip()]
            raise UserError(f"the evaluation ended (exit status {child.returncode}) before {len(jobs) - count} "
                            f"run(s): {said[-1] if said else 'no message'}")


def when(result, statistic):
    """Where the checkpoint stands, in words: "epoch 3", "step 500", "step 70 in epoch 2"."""
    if (statistic.get("hparams") or {}).get("max_steps"):
        return f"step {result['step']}"
    if not result.get("done"):
        return f"epoch {result['epoch']}"
    return f"step {result['step']} in epoch {result['epoch'] + 1}"


def causes(result, statistic, with_commit):
    """What can make an evaluation's numbers differ from its training's, of this one's."""
    found = []
    if with_commit:
        found.append(f"WITH's code and data ({with_commit[:10]})")
    if result["drew"]:
        found.append(f"evaluate draws from {' and '.join(result['drew'])}, which a checkpoint holds as it was after "
                     "its evaluation, not before")
    if with_commit:
        return found
    if statistic.get("world_size", 1) > 1:
        found.append(f"the run evaluated {statistic['world_size']} shards, summed over its processes")
    trained_on = (statistic.get("environment") or {}).get("device")
    if trained_on and trained_on != result["device"]:
        found.append(f"it trained on {trained_on}, this ran on {result['device']}")
    if not with_commit and result["data"] and result["data"]["fingerprint"] != (statistic.get("data") or {}).get(
            "fingerprint"):
        found.append(f"the data differ ({result['data']['fingerprint'][:12]}, recorded "
                     f"{str((statistic.get('data') or {}).get('fingerprint'))[:12]})")
    if not statistic.get("fix"):
        found.append("the run ran without FIX=1: its kernels need not be deterministic")
    return found


def verdict(result, statistic, with_commit):
    """The new metrics against those the checkpoint holds for itself, in words."""
    metrics, recorded = result["metrics"], result["recorded"]
    if recorded is None:
        return "no evaluation was recorded at this checkpoint: nothing to compare"
    at = when(result, statistic)
    shared = [name for name in metrics if name in recorded]
    new = [name for name in metrics if name not in recorded]
    differ = [name for name in shared if metrics[name] != recorded[name]]
    also = f" ({', '.join(new)} new)" if new and shared else ""
    if not shared:
        return f"none of them was recorded at {at}"
    if not differ:
        return f"equal to the recorded {at} metrics, bit for bit{also}"
    named = ", ".join(f"{name} {metrics[name]!r} (recorded {recorded[name]!r})" for name in differ)
    why = causes(result, statistic, with_commit)
    return f"differs from the recorded {at} metrics in {named}{also}" + (f": {'; '.join(why)}" if why else "")


def line(info, label, result, with_commit):
    statistic = info["statistic"]
    at = when(result, statistic)
    where = at if label == at else f"{label} ({at})"
    numbers = "  ".join(f"{name} {value:.4f}" for name, value in result["metrics"].items())
    left = f"  |  {result['media']} media left out" if result["media"] else ""
    left += f"  |  state {', '.join(result['fresh'])} started fresh: not in the checkpoint" if result["fresh"] else ""
    by = f" with {with_commit[:10]}" if with_commit else ""
    return f"eval {info['name']} {where}{by}: {numbers}  |  {verdict(result, statistic, with_commit)}{left}"


def record(info, checkpoint, result, commit):
    """Append one evaluation to the run's statistic.json (read again now: only this key changes)."""
    entry = {"checkpoint": checkpoint, "file": info["file"].name, "epoch": result["epoch"], "step": result["step"],
             "commit": commit, "data": result["data"], "time": now(), "device": result["device"],
             "metrics": result["metrics"]}
    if result["media"]:
        entry["media_left_out"] = result["media"]
    if result["fresh"]:
        entry["fresh_state"] = result["fresh"]
    statistic = read_statistic(info["folder"])
    statistic.setdefault("evaluations", []).append(entry)
    write_statistic(info["folder"], statistic)


def main():
    checkpoint = checkpoint_named(env("CKPT"))
    kind, visible = device()
    names = runs_named(env("EXP"))
    runs = [looked_at(name, checkpoint) for name in names]
    label = checkpoint if isinstance(checkpoint, str) and checkpoint in ("best", "last") else \
        f"epoch {checkpoint}" if isinstance(checkpoint, int) else checkpoint
    with tempfile.TemporaryDirectory(prefix="gitexp-eval-") as temp:
        temp = Path(temp)
        given = with_code(env("WITH"), temp)
        with_commit, with_folder = given or (None, None)
        held = [hold(info["folder"] / ".lock") for info in runs]
        if None in held:
            raise UserError(f"{runs[held.index(None)]['name']} started running just now: evaluate it once it has "
                            "finished or stopped")
        failed = 0
        jobs = [job_of(info, kind, with_folder) for info in runs]
        for info, result in zip(runs, answers(jobs, visible, temp)):
            if "error" in result:
                failed += 1
                print(f"error: eval {info['name']} {label}: {result['error']}", file=sys.stderr, flush=True)
                continue
            record(info, checkpoint, result, with_commit or info["statistic"]["commit"])
            print(line(info, label, result, with_commit), flush=True)
        for handle in held:
            handle.close()
    return 1 if failed else 0


if __name__ == "__main__":
    run(main, status=2)
