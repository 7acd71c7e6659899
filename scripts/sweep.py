"""A grid of configs and seeds: `python scripts/sweep.py` (make sweep NAME=s [GPUS=0,1] [JOBS=n] [FIX=1]).

The sweep file code/sweeps/<NAME>.py, committed, holds lines `name = [value, ...]` (every name
a config.py name, values Python literals; the points are their product, in the file's order) and
`runs_per_point = n` (the seeds of each point; default 1). It is read as data (grid.py), never run.

Each point is pinned: a commit of HEAD's tree with only those config.py values changed (parent
HEAD, on no branch: the user's branch, index, working tree and untracked files are never
touched) and an annotated tag named after its values, e.g. s-lr0.01-channels32 (s-<hash> where
the values do not make a tag name). Each run is an ordinary experiment of its point's tag, made
by scripts/experiment.py as `make run` makes one, with `sweep`, `point` and `sweep_run` recorded;
with FIX=1 run k gets the seed code/seed + k.

Runs go concurrently: one per listed GPU (CUDA_VISIBLE_DEVICES set to it), or JOBS at a time on
CPU (default 1), each run's output in its own log. Started again, a sweep does only what is
missing: finished runs are kept, stopped ones continued, failed ones run again as new ids (the
failed one stays recorded), new values add only their points. A run is claimed with a lock while
it runs, so two sweeps at once never run it twice. A point whose tag exists with other code
(HEAD's code changed since) is refused: name a new sweep instead.

The sweep keeps its list __statistic__/exper-list/<NAME>.txt (one point tag a line: make table
LIST=<NAME>) and its record __statistic__/sweeps/<NAME>.json (points, and each run's wall time).
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gitexp.files import atomic_write, write_json
from cli import UserError, check_switch, env, run
from conditions import cuda_device_count, python
from gitexp import protocol
from grid import SWEEPS, check_name, committed, parse_sweep, point_tag, points, with_values
from lists import LISTS
from names import GPU_LIST, check_number
from repo import commit_of, ensure_clean_tree, git
from store import RESULTS, claim_sweep_run, ids_of, sweep_runs, sweep_step

RECORDS = Path("__statistic__/sweeps")
POLL_SECONDS = 0.02


# ---- pinning each point -------------------------------------------------------------------------

def code_listing(treeish):
    """code/ of a commit or tree, the sweep files apart (adding values must not move old points)."""
    listing = git("ls-tree", "-r", treeish, "--", "code").stdout.splitlines()
    return [line for line in listing if not line.split("\t", 1)[1].startswith(f"{SWEEPS}/")]


def point_tree(config_text):
    """HEAD's tree with code/config.py replaced, written without touching the index."""
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], input=config_text, capture_output=True,
                          text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        index = dict(os.environ, GIT_INDEX_FILE=str(Path(folder) / "index"))
        for command in (["read-tree", "HEAD"], ["update-index", "--cacheinfo", f"100644,{blob},code/config.py"]):
            subprocess.run(["git", *command], env=index, capture_output=True, check=True)
        return subprocess.run(["git", "write-tree"], env=index, capture_output=True, text=True, check=True).stdout.strip()


def describe(values):
    return " ".join(f"{key}={value!r}" for key, value in values.items())


def pin(name, values, config):
    """The point's tag, made where missing; refused where it exists with other code."""
    tag = point_tag(name, values)
    tree = point_tree(with_values(config, values))
    tagged = commit_of(f"refs/tags/{tag}")
    if tagged is not None:
        if code_listing(tagged) != code_listing(tree):
            raise UserError(f"tag {tag} holds other code than HEAD's code/ with {describe(values)} (code/ changed since "
                            f"sweep {name} made it): start a new sweep, e.g. NAME={name}2, rather than mix versions")
        return tag
    commit = git("commit-tree", tree, "-p", "HEAD", "-m", f"sweep {name}: {describe(values)}", identity=True).stdout.strip()
    git("tag", "--annotate", "--message", f"gitexp sweep {name}: {describe(values)}", tag, commit, identity=True)
    return tag


# ---- running them -------------------------------------------------------------------------------

def check_devices():
    """The slots runs go in: a GPU index each, or None JOBS times."""
    gpus, jobs = env("GPUS"), env("JOBS")
    for variable in ("NPROC", "NNODES", "NODE_RANK", "MSG", "ID"):
        if env(variable):
            raise UserError(f"{variable} is not for make sweep: each run is one process, on one GPU or on CPU")
    if gpus and jobs:
        raise UserError("GPUS and JOBS were both given: GPUS=0,1 runs one run per GPU, JOBS=n n runs at a time on CPU")
    if gpus:
        if not GPU_LIST.fullmatch(gpus) or len(set(gpus.split(","))) != len(gpus.split(",")):
            raise UserError(f"GPUS={gpus!r} is not a list of distinct GPU indices: use e.g. GPUS=0,1")
        count = cuda_device_count()
        missing = [g for g in gpus.split(",") if int(g) >= count]
        if missing:
            raise UserError(f"GPUS={gpus}: there is no GPU {missing[0]} here ({count} found): "
                            "leave GPUS out and give JOBS=n to run on CPU")
        return gpus.split(",")
    count = check_number("JOBS", jobs) if jobs else 1
    if not 1 <= count <= 256:
        raise UserError(f"JOBS={jobs} is out of range: give 1 to 256 runs at a time")
    return [None] * count


def launch(step, tag, number, sweep, slot):
    """One run, by scripts/experiment.py; the runs side by side (sweep["at_once"]) share the
    cores, each taking its share of threads by the launcher's one thread policy."""
    child_env = dict(os.environ, TAG=tag, ID="" if number is None else str(number), GPUS="", NPROC="",
                     TB="0", GITEXP_SWEEP=json.dumps(sweep))
    if slot is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = slot
    mode = "more" if step == "new" else "continue"
    return subprocess.Popen([python(), "scripts/experiment.py", mode], env=child_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Progress:
    """One line: runs done / running / failed, on a tqdm bar (plain lines where tqdm is missing)."""

    def __init__(self, total):
        self.done = self.running = self.failed = 0
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            self.bar = None
        self.show()

    def show(self, advance=0):
        text = f"{self.done} done, {self.running} running, {self.failed} failed"
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=False)
            self.bar.update(advance)
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


class StopRequest:
    """Ctrl+C, SIGTERM or SIGUSR1, the same way from a terminal, a script or a background job
    (where SIGINT comes ignored): launch no more runs, and ask each running one to stop at its
    next step with a checkpoint (its launcher writes the stop file), continuable."""

    def __init__(self):
        self.asked, self.running = False, {}
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(number, self.ask)

    def ask(self, number, frame):
        self.asked = True
        for child in self.running:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)


def ended(returncode, stop):
    """A run's outcome from its launcher's exit status."""
    if returncode == 0:
        return "finished"
    stopped = returncode in (protocol.STOPPED, protocol.INTERRUPTED, -signal.SIGINT, -signal.SIGTERM)
    return "stopped" if stopped or stop.asked and returncode < 0 else "failed"


def run_all(name, jobs, slots):
    """Run every job (tag, values, k) that needs it, len(slots) at a time."""
    pending, waits, stop = list(jobs), [], StopRequest()
    running = stop.running
    free, progress = list(slots), Progress(len(jobs))
    outcome = {}  # (tag, k): status
    while pending and not stop.asked or running:
        while pending and free and not stop.asked:
            tag, values, k = pending.pop(0)
            held = claim_sweep_run(tag, name, k)
            if held is None:
                outcome[(tag, k)] = "running elsewhere"
                progress.show(1)
                continue
            step, number = sweep_step(tag, name, k)
            if step == "done":
                held.close()
                outcome[(tag, k)] = "finished"
                progress.done += 1
                progress.show(1)
                continue
            slot = free.pop(0)
            sweep = {"sweep": name, "point": values, "run": k, "at_once": len(slots)}
            running[launch(step, tag, number, sweep, slot)] = (tag, k, slot, held, time.perf_counter())
            progress.running += 1
            progress.show()
        for child in [c for c in running if c.poll() is not None]:
            tag, k, slot, held, began = running.pop(child)
            held.close()
            free.append(slot)
            waits.append({"tag": tag, "run": k, "seconds": round(time.perf_counter() - began, 3),
                          "status": child.returncode})
            outcome[(tag, k)] = ended(child.returncode, stop)
            progress.running -= 1
            progress.done += outcome[(tag, k)] == "finished"
            progress.failed += outcome[(tag, k)] == "failed"
            progress.show(1)
        if running:
            time.sleep(POLL_SECONDS)
    progress.close()
    for tag, _, k in pending:
        outcome.setdefault((tag, k), "not started")
    return outcome, waits, stop.asked


# ---- the record and the summary -----------------------------------------------------------------

def write_record(name, tags, grid, runs, waits):
    path = RECORDS / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    record = {"name": name, "grid": dict(grid), "runs_per_point": runs,
              "points": [{"tag": tag, "values": values} for tag, values in tags],
              "runs": old.get("runs", []) + waits}
    write_json(path, record)
    # the points that have experiments: a list may name no tag without one
    listing = "".join(f"{tag}\n" for tag, _ in tags if ids_of(tag))
    if listing and (not (LISTS / f"{name}.txt").exists() or (LISTS / f"{name}.txt").read_text() != listing):
        atomic_write(LISTS / f"{name}.txt", listing)  # rewritten only when it changes: make remakes the table


def summary(name, tags, runs, outcome):
    """One line a point: its values, runs finished, and the mean of each finished run's best
    monitored metric; then where the failed runs' logs are."""
    rows, failed_logs = [("point", "finished", "failed", "best")], []
    for tag, values in tags:
        finished, failed, best, monitor = 0, 0, [], ""
        for k in range(runs):
            found = sweep_runs(tag, name, k)
            done = [s for _, s in found if s.get("status") == "finished"]
            if done:
                finished += 1
                monitor = done[0].get("hparams", {}).get("monitor", "")
                value = done[0].get("metrics", {}).get("best", {}).get(monitor)
                if isinstance(value, (int, float)):
                    best.append(value)
            failed_logs += [str(RESULTS / tag / str(n) / "log") for n, s in found if s.get("status") == "failed"]
            failed += outcome.get((tag, k)) == "failed"
        mean = f"{monitor} {statistics.mean(best):.4f}" if best else ""
        rows.append((tag, f"{finished}/{runs}", str(failed), mean))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if failed_logs:
        print("failed runs' logs:\n  " + "\n  ".join(failed_logs))


def pinned_points(name):
    """The sweep file's grid and runs per point, and each point pinned: [(tag, values)]."""
    text = committed(SWEEPS / f"{name}.py")
    if text is None:
        raise UserError(f"there is no committed {SWEEPS / name}.py: write lines like lr = [0.1, 0.01], "
                        "git add and commit it")
    config = committed("code/config.py")
    if config is None:
        raise UserError("code/config.py is not committed: commit the experiment's code under code/")
    grid, runs = parse_sweep(name, text, config)
    ensure_clean_tree("")  # the sweep file and config.py that run are HEAD's
    tags = [(pin(name, values, config), values) for values in points(grid)]
    if len({tag for tag, _ in tags}) != len(tags):
        raise UserError(f"two points of sweep {name} would get one tag: shorten the values")
    return grid, runs, tags


def main():
    name = check_name(env("NAME"))
    slots = check_devices()
    check_switch("FIX", "gives run k of each point the seed code/seed + k")
    grid, runs, tags = pinned_points(name)
    jobs = [(tag, values, k) for tag, values in tags for k in range(runs)]
    if env("SLURM") == "1":  # one Slurm job array instead, a task a run: scripts/slurm.py
        import slurm
        write_record(name, tags, grid, runs, [])
        return slurm.submit_sweep(name, jobs)
    where = f"GPUs {','.join(slots)}" if slots[0] is not None else f"{len(slots)} at a time on CPU"
    print(f"sweep {name}: {len(tags)} points x {runs} runs, {where}; each run's output is in its log")
    write_record(name, tags, grid, runs, [])
    outcome, waits, interrupted = run_all(name, jobs, slots)
    write_record(name, tags, grid, runs, waits)
    summary(name, tags, runs, outcome)
    if interrupted:
        print(f"stopped: make sweep NAME={name} goes on where it stopped (stopped runs are continued)")
        sys.exit(130)
    unfinished = [key for key, status in outcome.items() if status != "finished"]
    if unfinished:
        print(f"{len(unfinished)} of {len(jobs)} runs did not finish: make sweep NAME={name} runs them again")
        sys.exit(1)
    print(f"all {len(jobs)} runs finished: make table LIST={name} CHANGED=1 compares them")


if __name__ == "__main__":
    run(main, status=2)
