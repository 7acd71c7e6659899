"""statistic.json, field by field: what each holds and who writes it, written down once, and
`problems(statistic)`, which checks a record against it (the tests check every record they
read). Standard library only.

Who writes: L, the launcher (scripts/launch.py's start, before main.py runs; conclude, after a
crash; scripts/eval.py, `evaluations`); R, the loop (gitexp/record.py, rank 0, from its start
on). A field marked "always" is there from the launcher's first write; the others once something
gives them.
"""
STATUSES = ("running", "stopped", "failed", "finished")
NUMBER = (int, float)
TEXT_OR_NONE = (str, type(None))

#  name: (types, always, who, meaning)
FIELDS = {
    "tag": (str, True, "L", "the git tag whose code ran"),
    "id": (int, True, "L", "its number under the tag: __result__/<tag>/<id>/"),
    "commit": (str, True, "L", "the tag's commit, 40 hex digits"),
    "status": (str, True, "LR", "running, stopped (continuable), failed or finished"),
    "seed": (int, True, "L", "the run's seed (FIX=1: code/seed's)"),
    "fix": (bool, True, "L", "FIX=1: the fixed seed and deterministic kernels"),
    "host": (str, True, "L", "the machine the launcher ran on"),
    "start": (str, True, "L", "when it started (ISO 8601, local time with its offset)"),
    "end": (TEXT_OR_NONE, True, "LR", "when it ended, stopped or failed; None while it runs"),
    "epoch": (int, True, "LR", "epochs done"),
    "step": (int, False, "R", "optimizer steps done, over every epoch"),
    "epoch_steps": (int, False, "R", "the optimizer steps of an epoch (of the whole run where it is counted in "
                                     "max_steps): make report's epoch axis"),
    "world_size": (int, True, "LR", "processes in all (nodes x processes a node)"),
    "conditions": (dict, True, "LR", "what changes the numbers besides code, data and seed: world_size, nodes, "
                                     "processes_per_node, gpus, nproc, threads; changed: the continues that went "
                                     "on under others"),
    "hparams": (dict, True, "LR", "every plain value in config.py"),
    "metrics": (dict, True, "LR", "best and last: the monitored best epoch's and the last epoch's metrics"),
    "durations": (dict, True, "LR", "epoch_seconds (each epoch's), total_seconds"),
    "environment": (dict, False, "R", "python, torch, cuda, cudnn, gpus, host, device, threads and the "
                                      "deterministic switch the loop ran with"),
    "data": (dict, False, "R", "the prepared data: key, fingerprint; accepted (ACCEPT_DATA=1 continues), "
                               "at_end (where it changed during the run)"),
    "init_from": (dict, False, "R", "a warm start's source: experiment, epoch, file, sha256, resume"),
    "error": (str, False, "L", "a failed run's first error line, whichever rank had it"),
    "legs": (list, False, "RL", "each start of the run: how (run, continue, requeue), from_step, start, host, "
                                "slurm_job, end, ended (finished, stopped, killed, failed; None while it runs) and "
                                "a failed leg's error"),
    "early_stop": (dict, False, "R", "a run that stopped early (patience, or after_evaluation's reason): epoch, "
                                     "step, reason"),
    "rerun_of": (str, False, "L", "make rerun: the tag/id it reproduces"),
    "repeat_of": (TEXT_OR_NONE, False, "L", "a FIX=1 run of a seed already recorded: that run's tag/id"),
    "sweep": (str, False, "L", "make sweep: the sweep's name"),
    "point": (dict, False, "L", "make sweep: the point's values"),
    "sweep_run": (int, False, "L", "make sweep: the run's number at its point"),
    "slurm_job": (str, False, "L", "make submit: the Slurm job's id (a requeued job continues this run)"),
    "evaluations": (list, False, "L", "make eval's evaluations of the run's checkpoints, oldest first, each as "
                                      "EVALUATION below; the training's own fields never change with them"),
}

# one item of "evaluations" (scripts/eval.py appends it)
EVALUATION = {
    "checkpoint": ((str, int), True, "L", "the checkpoint as CKPT named it: best, last, an epoch, a file's name"),
    "file": (str, True, "L", "the checkpoint file it was, epoch_<n>.pth or step_<n>_<k>.pth"),
    "epoch": (int, True, "L", "the checkpoint's epochs done"),
    "step": (int, True, "L", "the checkpoint's optimizer steps done"),
    "commit": (str, True, "L", "the commit of the evaluation's code: the run's own, or WITH's"),
    "data": ((dict, type(None)), True, "L", "the data it read: key (None: data of your own), fingerprint"),
    "time": (str, True, "L", "when it was evaluated (ISO 8601)"),
    "device": (str, True, "L", "cpu or cuda"),
    "metrics": (dict, True, "L", "{<set>_<metric>: value} of every evaluation set"),
    "media_left_out": (int, False, "L", "how many media (or other values that are not numbers) were left out"),
    "fresh_state": (list, False, "L", "WITH's declared states the checkpoint did not hold, started as "
                                      "configure_optimizers made them"),
}

# the parts of the fields above that are objects: (name, types, always)
PARTS = {
    "conditions": {"world_size": (int, True), "nodes": (int, True), "processes_per_node": (int, True),
                   "gpus": (TEXT_OR_NONE, True), "nproc": ((int, type(None)), True), "threads": (int, True),
                   "changed": (list, False)},
    "metrics": {"best": ((dict, type(None)), False), "last": ((dict, type(None)), False)},
    "durations": {"epoch_seconds": (list, False), "total_seconds": (NUMBER, False)},
    "data": {"key": (TEXT_OR_NONE, True), "fingerprint": (str, True), "accepted": (list, False),
             "at_end": (str, False), "facts": (dict, False)},
    "early_stop": {"epoch": (int, True), "step": (int, True), "reason": (str, True)},
    "init_from": {"experiment": (str, True), "epoch": (int, True), "file": (str, True), "sha256": (str, True),
                  "resume": (bool, True)},
}


def kind_ok(value, types):
    """isinstance, where a bool is not an int (json tells them apart, and so does the record)."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        return False
    return isinstance(value, types)


def check_fields(where, record, fields):
    """The problems of one object against {name: (types, always, ...)}."""
    found = []
    for name, (types, always, *_) in fields.items():
        if name not in record:
            if always:
                found.append(f"{where}{name} is missing")
        elif not kind_ok(record[name], types):
            found.append(f"{where}{name} is {type(record[name]).__name__}: {record[name]!r}")
    found += [f"{where}{name} is not a field of statistic.json (gitexp/schema.py)" for name in record
              if name not in fields]
    return found


def problems(statistic):
    """What in a statistic.json does not fit the fields above: [] where all of it does."""
    found = check_fields("", statistic, FIELDS)
    for name, parts in PARTS.items():
        if isinstance(statistic.get(name), dict):
            found += check_fields(f"{name}.", statistic[name], parts)
    evaluations = statistic.get("evaluations")
    for number, item in enumerate(evaluations if isinstance(evaluations, list) else []):
        found += check_fields(f"evaluations[{number}].", item, EVALUATION) if isinstance(item, dict) else \
            [f"evaluations[{number}] is {type(item).__name__}, not an object"]
    if statistic.get("status") not in STATUSES:
        found.append(f"status is {statistic.get('status')!r}, not one of {', '.join(STATUSES)}")
    commit = statistic.get("commit")
    if isinstance(commit, str) and (len(commit) != 40 or commit.strip("0123456789abcdef")):
        found.append(f"commit {commit!r} is not 40 hex digits")
    if statistic.get("status") == "finished":
        found += [f"a finished run has no {name}" for name in ("environment", "step") if name not in statistic]
    return found
