"""What statistic.json says of a run, read in one place: its run facts (what it ran with besides
its code and hparams: seed, data, versions, world size, threads, host, GPU), its hparams and
metrics flattened to dotted keys, and the latest of make eval's metrics. The table's run.*
columns, make rerun's comparison and make diff all take them from here, and where two runs' step
curves part (first_parting, which borrows the loop's events reader). Standard library only, but
for that reader.
"""
from pathlib import Path

# the facts the table shows as run.<name> columns, in this order (where a run records them)
TABLE_FACTS = ("status", "stopped_early", "seed", "fix", "world_size", "threads", "data", "data_at_end", "repeat_of",
               "torch", "host")
# the facts make rerun and make diff compare, by the words they say them in, in this order
COMPARED_FACTS = {"data": "data fingerprint", "data_changed": "data changed during the run", "python": "python",
                  "torch": "torch", "cuda": "CUDA", "cudnn": "cuDNN", "world_size": "world size", "nodes": "nodes",
                  "threads_used": "threads", "deterministic": "deterministic", "device": "device",
                  "conditions_changed": "continued with other conditions", "host": "host", "gpu": "GPU"}


def part(statistic, key):
    value = statistic.get(key)
    return value if isinstance(value, dict) else {}


def run_facts(statistic, missing=None):
    """Every run fact of one statistic.json by name; `missing` where the record has none (an
    older template's record, or a run on CPU: no GPU names)."""
    data, environment, conditions = (part(statistic, key) for key in ("data", "environment", "conditions"))
    early = part(statistic, "early_stop")
    fingerprint, at_end, gpus = data.get("fingerprint"), data.get("at_end"), environment.get("gpus", missing)
    return {"status": statistic.get("status"), "seed": statistic.get("seed"), "fix": statistic.get("fix"),
            "stopped_early": f"step {early['step']}" if isinstance(early.get("step"), int) else missing,
            "world_size": statistic.get("world_size"), "threads": conditions.get("threads", missing),
            "data": fingerprint[:12] if isinstance(fingerprint, str) and fingerprint else missing,
            "data_at_end": at_end[:12] if isinstance(at_end, str) and at_end else missing,
            "data_changed": "yes" if at_end else "no",
            "repeat_of": statistic.get("rerun_of") or statistic.get("repeat_of") or missing,
            "python": environment.get("python", missing), "torch": environment.get("torch", missing),
            "cuda": environment.get("cuda", missing), "cudnn": environment.get("cudnn", missing),
            "nodes": conditions.get("nodes", missing),
            "threads_used": environment.get("threads", conditions.get("threads", missing)),
            "deterministic": environment.get("deterministic", missing), "device": environment.get("device", missing),
            "conditions_changed": len(conditions.get("changed", [])), "host": statistic.get("host"),
            "gpu": ", ".join(gpus) or "none" if isinstance(gpus, list) else gpus}


def first_parting(a, b):
    """(step, curve, a's value, b's value) where the step curves (step/<name>) of two runs, given
    as (statistic, folder), first differ, the time_scalars left out; None where they agree."""
    from gitexp.events import scalars  # the events files' own reader: tensorboard's protobufs

    timed = {f"step/{name}" for name in (a[0].get("hparams") or {}).get("time_scalars") or ()}
    curves_a, curves_b = (scalars(Path(folder) / "tensorboard") for _, folder in (a, b))
    for name, step in sorted(curves_a.keys() & curves_b.keys(), key=lambda key: (key[1], key[0])):
        if name not in timed and curves_a[name, step] != curves_b[name, step]:
            return step, name, curves_a[name, step], curves_b[name, step]
    return None


def parting_words(a, b):
    """Where two runs that should be equal part, in words, and a continue just before it as the
    likely cause; None where their step curves agree."""
    parting = first_parting(a, b)
    if parting is None:
        return None
    step, name, value_a, value_b = parting
    words = f"their step curves first differ at step {step} ({name} {value_a!r} against {value_b!r})"
    for statistic, _ in (a, b):
        starts = [leg["from_step"] for leg in (statistic.get("legs") or [])[1:]
                  if isinstance(leg.get("from_step"), int) and leg["from_step"] < step]
        if starts:
            before = step - max(starts) - 1
            words += (f"; {statistic['tag']}/{statistic['id']} was continued from step {max(starts)}, "
                      f"{'right before it' if before == 0 else f'{before} step(s) before it'}: the likely cause is a "
                      "state its checkpoint lacks, which make check finds")
    return words


def table_facts(statistic):
    """The facts the table shows, those the run records."""
    facts = run_facts(statistic)
    return {name: facts[name] for name in TABLE_FACTS if facts[name] is not None}


def compared_facts(statistic):
    """{the words for a fact: its value} of the facts two runs are compared by."""
    facts = run_facts(statistic, missing="unrecorded")
    return {words: facts[name] for name, words in COMPARED_FACTS.items()}


def latest_evaluations(statistic):
    """{<set>_<metric>: (its value, the evaluation it is from)}: each metric of make eval's
    evaluations (statistic.json's `evaluations`) from the latest evaluation that has it, whichever
    checkpoint that evaluated."""
    latest = {}
    for evaluation in statistic.get("evaluations") if isinstance(statistic.get("evaluations"), list) else []:
        if isinstance(evaluation, dict) and isinstance(evaluation.get("metrics"), dict):
            latest.update({name: (value, evaluation) for name, value in evaluation["metrics"].items()})
    return latest


def evaluated(statistic):
    """{<set>_<metric>: value} of latest_evaluations (the table's eval.* columns, make diff's eval
    rows)."""
    return {name: value for name, (value, _) in latest_evaluations(statistic).items()}


def evaluated_by(runs):
    """{<set>_<metric>: which evaluations gave evaluated()'s values, in words, each run's latest
    ("best with 3f2a1b0c9d")}: make diff notes values of unlike evaluations."""
    found = {}
    for statistic in runs:
        for name, (_, evaluation) in latest_evaluations(statistic).items():
            said = f"{evaluation.get('checkpoint')} with {str(evaluation.get('commit'))[:10]}"
            found.setdefault(name, set()).add(said)
    return {name: ", ".join(sorted(said)) for name, said in found.items()}


def flatten(tree, prefix, out):
    """hparams/metrics leaves as `prefix.key` (a list's items as `prefix.key.0`), depth first,
    in the file's order; an empty object or list has none."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        if isinstance(value, (dict, list)):
            flatten(value, f"{prefix}{key}.", out)
        else:
            out[f"{prefix}{key}"] = value
    return out
