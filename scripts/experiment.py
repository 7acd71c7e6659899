"""Start, continue or rerun one experiment: `python scripts/experiment.py run|more|continue|rerun`.

Called by `make run/more/continue/rerun` (and for each run of `make sweep`, and of a Slurm job);
its input comes from the environment (TAG, ID, FIX, GPUS, NPROC, MSG, NNODES, NODE_RANK,
MASTER_ADDR, MASTER_PORT, PY), never pasted into a shell. Everything is checked before
anything is written; a bad value stops it with one line. What each command does is here; the
pieces it is made of are repo.py (git), conditions.py (devices, threads), store.py (the
__result__ layout) and launch.py (running main.py). Only the standard library is used: it
starts fast and needs no torch.
"""
import json
import secrets

from cli import UserError, env, run_mode
from conditions import check_resumable, devices_and_threads, devices_given, parse_devices, thread_count
from facts import compared_facts, flatten, parting_words
from gitexp import protocol
from launch import accepting_data, conclude, execute, follow, init_fits, resume_accepted, start
from names import check_number
from repo import (check_runnable, check_tag, check_tag_free, ensure_clean_tree, existing_tag, fixed_seed,
                  snapshot, tag_head, tag_seed)
from store import RESULTS, existing_experiment, hold, new_folder, read_statistic, runs_of_tag, status_of


def check_fix(value):
    if value not in ("", "0", "1"):
        raise UserError(f"FIX={value!r} is not 0 or 1: FIX=1 fixes the seed (code/seed) and makes kernels deterministic")
    return value == "1"


def lock(folder):
    """Hold the experiment's lock for as long as this process lives; None if another has it."""
    return hold(folder / ".lock")


def sweep_facts():
    """What scripts/sweep.py says of the run it starts (GITEXP_SWEEP, never a user's variable)."""
    given = env("GITEXP_SWEEP")
    if not given:
        return {}, 1
    facts = json.loads(given)
    return {"sweep": facts["sweep"], "point": facts["point"], "sweep_run": facts["run"]}, facts.get("at_once", 1)


def repeat_of(tag, seed, fix):
    """The first run of `tag` with this seed and FIX mode that did not fail: a new run with them
    repeats it (the same numbers under FIX=1), and is not pooled with it as another sample."""
    for number, statistic in runs_of_tag(tag):
        if statistic.get("seed") == seed and statistic.get("fix") == fix and statistic.get("status") != "failed":
            return f"{tag}/{number}"
    return None


def note_repeat(tag, seed, fix):
    """{"repeat_of": "tag/id"} where a FIX=1 run repeats a recorded run's seed (said so), else {}."""
    repeats = repeat_of(tag, seed, fix) if fix else None
    if not repeats:
        return {}
    print(f"note: {repeats} already ran with seed {seed} (FIX=1): this run repeats it, and is recorded as "
          "repeat_of, apart from the distinct runs a mean pools (leave FIX=1 out for a new seed)")
    return {"repeat_of": repeats}


def do_run():
    tag, fix, devices = check_tag(env("TAG")), check_fix(env("FIX")), parse_devices()
    if devices[2] > 0:
        return follow(tag, devices)
    check_tag_free(tag, env("MSG"))
    check_runnable()
    seed = fixed_seed() if fix else secrets.randbelow(2**31)
    if not env("MSG"):
        ensure_clean_tree("")  # a dirty tree is refused before the longer look below
    if not init_fits():
        return 1
    ensure_clean_tree(env("MSG"))
    commit = tag_head(tag)
    repeats = note_repeat(tag, seed, fix)
    folder, number = new_folder(tag)
    held = lock(folder)
    snapshot(tag, folder)
    status = start(tag, number, folder, commit, seed, fix, devices, thread_count(devices[0]), **repeats)
    conclude(folder, status)
    held.close()
    return status


def do_more():
    """Another run of an existing tag, wherever HEAD is: a new seed (FIX=1: the tag's code/seed;
    in a sweep, code/seed + the run's number)."""
    tag, fix, devices = check_tag(env("TAG")), check_fix(env("FIX")), parse_devices()
    if devices[2] > 0:
        return follow(tag, devices)
    commit = existing_tag(tag)
    sweep, at_once = sweep_facts()
    seed = tag_seed(tag) + sweep.get("sweep_run", 0) if fix else secrets.randbelow(2**31)
    repeats = note_repeat(tag, seed, fix)
    if not init_fits(tag):
        return 1
    folder, number = new_folder(tag)
    held = lock(folder)
    snapshot(tag, folder)
    status = start(tag, number, folder, commit, seed, fix, devices, thread_count(devices[0], at_once),
                   **sweep, **repeats)
    conclude(folder, status)
    held.close()
    return status


def pick_unfinished(tag):
    """The highest id of `tag` that is neither finished nor running now."""
    running = []
    for number, statistic in reversed(runs_of_tag(tag)):
        status = status_of(RESULTS / tag / str(number), statistic.get("status"))
        if status == "running":
            running.append(f"{tag}/{number}")
        elif status != "finished":
            return number
    now_running = f": {', '.join(running)} {'is' if len(running) == 1 else 'are'} running now" if running else ""
    raise UserError(f"{tag} has no unfinished experiment to continue{now_running} (make ls TAG={tag} shows its ids)")


def run_of_job(tag, job):
    """The id of the run of `tag` that Slurm job `job` started, or None."""
    return next((number for number, statistic in runs_of_tag(tag) if statistic.get("slurm_job") == job), None)


def check_same_code(folder, statistic, commit):
    if statistic.get("commit") != commit:
        raise UserError(f"{folder} was run with commit {str(statistic.get('commit'))[:10]}, but tag "
                        f"{statistic.get('tag')} is now at {commit[:10]}: it is another code's experiment")


def do_continue():
    tag = check_tag(env("TAG"))
    accepting_data()  # ACCEPT_DATA and the devices given checked before anything is looked up
    given = parse_devices() if devices_given() else None
    if given is not None and given[2] > 0:
        return follow(tag, given)
    commit = existing_tag(tag)
    job = env("GITEXP_SLURM_JOB")
    if job and not env("ID"):  # a requeued Slurm job: its own run, whatever else runs under the tag
        number = run_of_job(tag, job)
        if number is None:
            print(f"note: Slurm job {job} was requeued before it recorded a run of {tag}: starting one")
            return do_more()
    else:
        number = check_number("ID", env("ID")) if env("ID") else pick_unfinished(tag)
    folder = existing_experiment(tag, number)
    statistic = read_statistic(folder)
    if statistic.get("status") == "finished":
        early = statistic.get("early_stop")
        how = f" (it stopped early at epoch {early['epoch']}, step {early['step']}: {early['reason']})" if early else ""
        raise UserError(f"{tag}/{number} is already finished{how}: make rerun TAG={tag} ID={number} reproduces it")
    check_same_code(folder, statistic, commit)
    devices, threads = devices_and_threads(statistic, given)
    held = lock(folder)
    if held is None:
        raise UserError(f"{tag}/{number} is running right now: wait for it, or stop it first")
    changed = check_resumable(folder, statistic, devices, threads)
    if changed:
        print(f"note: {tag}/{number} goes on from an epoch's end with {'; '.join(changed)}: its numbers will differ "
              "from an uninterrupted run's (recorded under conditions.changed)")
    snapshot(tag, folder)
    if not resume_accepted(folder, devices, threads):
        return 1  # main.py said why; nothing was changed
    status = execute(folder, "continue", devices, threads, statistic.get("init_from"), changed=bool(changed))
    if status == protocol.REFUSED:
        return 1  # main.py said why; nothing was changed
    conclude(folder, status)
    held.close()
    return status


def compare(original, rerun):
    """After a rerun: its metrics against the original's, and where they differ, the run facts
    that differ too."""
    name = f"{original['tag']}/{original['id']}"
    if original.get("status") != "finished":
        print(f"{name} did not finish ({original.get('status')}): no metrics to compare")
        return
    before, after = (flatten(s.get("metrics", {}), "", {}) for s in (original, rerun))
    timed = {f"train_{name}" for name in original.get("hparams", {}).get("time_scalars") or ()}
    differ = [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)
              and k.rpartition(".")[2] not in timed]  # a time measured differs every run
    early = [s.get("early_stop") or {} for s in (original, rerun)]
    if early[0].get("step") != early[1].get("step"):
        print(f"stopped early: {name} at step {early[0].get('step')}, this rerun at step {early[1].get('step')}")
    elif early[0]:
        print(f"stopped early at the same step as {name}: step {early[0]['step']}")
    if not differ:
        left_out = sum(k.rpartition(".")[2] in timed for k in before)
        print(f"metrics equal to {name}: all {len(before) - left_out} values identical"
              + (f" ({left_out} of time_scalars, which measure time, left out)" if left_out else ""))
        return
    print(f"metrics differ from {name} in {len(differ)} of {len(before)} values:")
    for key in differ:
        print(f"  {key}: {before.get(key)} -> {after.get(key)}")
    then, now = compared_facts(original), compared_facts(rerun)
    causes = [f"{fact} {then[fact]} -> {now[fact]}" for fact in then if then[fact] != now[fact]]
    checked = ", ".join(then)
    if causes:
        print(f"the two runs differ in: {'; '.join(causes)}")
    elif not original.get("fix"):
        print(f"the two runs differ in none of {checked}: {name} ran without FIX=1, so kernels need not be deterministic")
    else:
        print(f"the two runs differ in none of {checked}")
    where = parting_words((original, RESULTS / original["tag"] / str(original["id"])),
                          (rerun, RESULTS / rerun["tag"] / str(rerun["id"])))
    if where:
        print(where)


def do_rerun():
    tag = check_tag(env("TAG"))
    given = parse_devices() if devices_given() else None
    if given is not None and given[2] > 0:
        return follow(tag, given)
    commit = existing_tag(tag)
    number = check_number("ID", env("ID")) if env("ID") else 0
    source = existing_experiment(tag, number)
    original = read_statistic(source)
    check_same_code(source, original, commit)
    if status_of(source, original.get("status")) == "running":
        raise UserError(f"{tag}/{number} is running now: rerun it once it has finished (make ls TAG={tag})")
    devices, threads = devices_and_threads(original, given)
    processes, nodes, _, _ = devices
    if original.get("world_size", 1) != processes * nodes:
        print(f"note: {tag}/{number} ran with {original.get('world_size')} process(es), this rerun with "
              f"{processes * nodes}: leave GPUS, NPROC and NNODES out to take its own, or expect different numbers")
    if not init_fits(tag, original.get("init_from")):
        return 1
    folder, new_number = new_folder(tag)
    held = lock(folder)
    snapshot(tag, folder)
    status = start(tag, new_number, folder, commit, original["seed"], original["fix"], devices, threads,
                   rerun_of=f"{tag}/{number}", init=original.get("init_from"))
    rerun = conclude(folder, status)
    if status == 0:
        compare(original, rerun)
    held.close()
    return status


def main():
    run_mode({"run": do_run, "more": do_more, "continue": do_continue, "rerun": do_rerun})


if __name__ == "__main__":
    main()
