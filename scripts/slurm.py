"""Experiments as Slurm jobs: `python scripts/slurm.py submit|node` (make submit; make sweep SLURM=1).

submit: everything is checked here, at submission, not hours later when the job starts: the tag,
a clean tree, the devices. HEAD is tagged now and the job runs that tag's code, whatever HEAD is
when it starts. The job passes its settings as GITEXP_* variables (not TAG, FIX, ..., which make
would note as ignored). Its output goes to __result__/.slurm/<job>.out, appended across requeues.

node: what scripts/slurm.sbatch runs on each node of the job (srun): it starts
scripts/experiment.py there. Node 0 runs `more` of the tag, which records the job's id
(GITEXP_SLURM_JOB); a requeued job runs `continue` with it and takes up the run it recorded, or
starts one where it had not yet (experiment.py's do_continue). A task of a
sweep's job array runs its point's run k as make sweep would (sweep.py's next_step).
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from cli import UserError, env, run_mode
from experiment import check_fix
from launch import init_fits
from names import GPU_LIST, check_number
from repo import check_runnable, check_tag, check_tag_free, ensure_clean_tree, fixed_seed, tag_head
from store import RESULTS

OUTPUT = RESULTS / ".slurm"
SCRIPT = "scripts/slurm.sbatch"
# the Makefile's variables (it names them in GITEXP_USER_VARIABLES) and make's own, exported to
# this process: not passed on to the job, whose make venv would note them as "set in the
# environment, ignored" or, from MAKEFLAGS, take them as given on its command line; the job gets
# its own GITEXP_* ones, and its interpreter is PYTHON
MAKE_OWN = {"PY", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GITEXP_USER_VARIABLES"}


def check_slurm_devices():
    """sbatch's options for NPROC or GPUS and NODES: {option: value}."""
    gpus, nproc, nodes = env("GPUS"), env("NPROC"), env("NODES")
    if gpus and nproc:
        raise UserError("GPUS and NPROC were both given: GPUS=0,1 runs one process per GPU, NPROC=n n processes on CPU")
    if gpus and not GPU_LIST.fullmatch(gpus):
        raise UserError(f"GPUS={gpus!r} is not a list of GPU indices: GPUS=0,1 asks Slurm for two GPUs a node")
    processes = len(gpus.split(",")) if gpus else check_number("NPROC", nproc) if nproc else 1
    if not 1 <= processes <= 256:
        raise UserError(f"NPROC={nproc} is out of range: give 1 to 256 processes")
    count = check_number("NODES", nodes) if nodes else 1
    if not 1 <= count <= 1024:
        raise UserError(f"NODES={nodes} is out of range: give the number of nodes, 1 or more")
    options = {"--nodes": count, "--ntasks-per-node": 1}
    if gpus:  # only where asked: a partition without GPUs refuses any --gpus-per-node
        options["--gpus-per-node"] = processes
    else:
        options["--cpus-per-task"] = processes
    return options, processes, count


def sbatch(options, variables, extra=()):
    """Submit scripts/slurm.sbatch; the job's id."""
    if shutil.which("sbatch") is None:
        raise UserError("sbatch is not found: make submit runs on a Slurm cluster's login node")
    try:
        user_options = shlex.split(env("SBATCH"))
    except ValueError as error:
        raise UserError(f"SBATCH={env('SBATCH')!r} cannot be read as options ({error}): quote it as a shell would")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    exports = ",".join(f"{name}={value}" for name, value in variables.items())
    command = ["sbatch", "--parsable", f"--export=ALL,{exports}", *extra,
               *(f"{option}={value}" for option, value in options.items()), *user_options, SCRIPT]
    left_out = MAKE_OWN | set(env("GITEXP_USER_VARIABLES").split())
    job_env = {name: value for name, value in os.environ.items() if name not in left_out}
    result = subprocess.run(command, capture_output=True, text=True, env=job_env)
    if result.returncode != 0:
        raise UserError(f"sbatch refused the job: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return result.stdout.strip().split(";")[0]


def job_variables(processes, nodes):
    variables = {"GITEXP_FIX": env("FIX") or "0", "GITEXP_GPUS": "1" if env("GPUS") else "",
                 "GITEXP_NPROC": str(processes) if processes > 1 and not env("GPUS") else "",
                 "GITEXP_NNODES": str(nodes) if nodes > 1 else ""}
    if env("PYTHON"):
        variables["GITEXP_PYTHON"] = str(Path(env("PYTHON")).absolute()) if "/" in env("PYTHON") else env("PYTHON")
    return variables


def submit():
    tag, fix = check_tag(env("TAG")), check_fix(env("FIX"))
    options, processes, nodes = check_slurm_devices()
    check_tag_free(tag, "")
    check_runnable()
    ensure_clean_tree("")
    if fix:
        fixed_seed()
    if not init_fits():
        return 1
    variables = dict(job_variables(processes, nodes), GITEXP_TAG=tag)
    output = OUTPUT / "%j.out"
    commit = tag_head(tag)
    job = sbatch(dict(options, **{"--job-name": f"gitexp-{tag}", "--output": output, "--comment": f"gitexp tag={tag}"}),
                 variables)
    print(f"submitted job {job}: {tag} at commit {commit[:10]}, {processes * nodes} process(es) on {nodes} node(s); "
          f"output in {OUTPUT}/{job}.out (make ls lists its run once it starts)")
    return 0


def submit_sweep(name, jobs):
    """make sweep SLURM=1: one job array, a task a run (tag, values, k) not finished nor queued."""
    from store import sweep_step as next_step
    queued = queued_runs(name)
    todo = [(tag, values, k) for tag, values, k in jobs
            if (tag, k) not in queued and next_step(tag, name, k)[0] != "done"]
    if not todo:
        print(f"sweep {name}: nothing to submit ({len(jobs)} runs finished or queued)")
        return 0
    parallel = check_number("PARALLEL", env("PARALLEL")) if env("PARALLEL") else len(todo)
    if parallel < 1:
        raise UserError("PARALLEL=0 is out of range: give how many runs may go at once, 1 or more")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    manifest = OUTPUT / f"sweep-{name}-{os.getpid()}-{len(list(OUTPUT.glob(f'sweep-{name}-*.json')))}.json"
    manifest.write_text(json.dumps({"sweep": name, "runs": [[t, v, k] for t, v, k in todo]}))
    variables = {"GITEXP_FIX": env("FIX") or "0", "GITEXP_SWEEP_TASKS": str(manifest.absolute())}
    if env("PYTHON"):
        variables["GITEXP_PYTHON"] = str(Path(env("PYTHON")).absolute()) if "/" in env("PYTHON") else env("PYTHON")
    job = sbatch({"--array": f"0-{len(todo) - 1}%{parallel}", "--job-name": f"gitexp-{name}",
                  "--comment": f"gitexp sweep={manifest.name}",
                  "--output": OUTPUT / "%A_%a.out", "--nodes": 1, "--ntasks-per-node": 1}, variables)
    manifest.write_text(json.dumps({"sweep": name, "job": job, "runs": [[t, v, k] for t, v, k in todo]}))
    print(f"sweep {name}: submitted job array {job} ({len(todo)} runs, {parallel} at most at once); "
          f"output in {OUTPUT}/{job}_<task>.out; make sweep NAME={name} SLURM=1 again submits what is missing")
    return 0


def queued_runs(name):
    """(tag, k) of the sweep's runs whose array task is still queued or running."""
    found = set()
    for manifest in OUTPUT.glob(f"sweep-{name}-*.json") if OUTPUT.is_dir() else []:
        record = json.loads(manifest.read_text())
        if "job" not in record:
            continue
        listed = subprocess.run(["squeue", "-h", "-r", "-j", record["job"], "-o", "%K"], capture_output=True, text=True)
        for task in listed.stdout.split() if listed.returncode == 0 else []:
            if task.isdigit() and int(task) < len(record["runs"]):
                tag, _, k = record["runs"][int(task)]
                found.add((tag, k))
    return found


def print_jobs():
    """make ls: a line for each queued or running job of this project, with the run it continues."""
    listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r|%k|%Z"], capture_output=True, text=True)
    lines = []
    for line in listed.stdout.splitlines() if listed.returncode == 0 else []:
        job, state, reason, comment, folder = (line.split("|") + [""] * 5)[:5]
        if not comment.startswith("gitexp ") or Path(folder).resolve() != Path.cwd().resolve():
            continue
        kind, _, value = comment[len("gitexp "):].partition("=")
        lines.append(f"  job {job} {state.lower()}{f' ({reason})' if state == 'PENDING' else ''}: {job_run(kind, value, job)}")
    if lines:
        print("Slurm jobs:\n" + "\n".join(lines))


def job_run(kind, value, job):
    """The run a job works on: tag/id once it has started one, else its tag (a sweep's: and run k)."""
    from experiment import run_of_job
    from store import sweep_runs as runs_of
    if kind == "tag":
        number = run_of_job(value, job)
        return f"{value}/{number}" if number is not None else f"{value} (no run yet)"
    try:
        record = json.loads((OUTPUT / value).read_text())
        tag, _, k = record["runs"][int(job.split("_")[1])]
    except (OSError, ValueError, IndexError, KeyError):
        return f"sweep ({value}: unreadable)"
    found = runs_of(tag, record["sweep"], k)
    return f"{tag}/{found[-1][0]} (sweep {record['sweep']} run {k})" if found else f"{tag} (sweep {record['sweep']} run {k}, no run yet)"


def node():
    """On each node of the job step: start scripts/experiment.py (node 0: continue this job's run)."""
    node_rank = env("SLURM_NODEID") or "0"
    variables = {"FIX": env("GITEXP_FIX"), "NPROC": env("GITEXP_NPROC"), "NNODES": env("GITEXP_NNODES"),
                 "NODE_RANK": node_rank if env("GITEXP_NNODES") else "", "TB": "0", "ID": "",
                 "GPUS": env("CUDA_VISIBLE_DEVICES") if env("GITEXP_GPUS") else "", "PY": sys.executable}
    if env("GITEXP_SWEEP_TASKS"):
        return sweep_task(variables)
    variables.update(TAG=env("GITEXP_TAG"), GITEXP_SLURM_JOB=env("SLURM_JOB_ID"))
    # requeued: the run this job recorded (or a new one, where it had not yet); first: a new run
    mode = "continue" if (env("SLURM_RESTART_COUNT") or "0") != "0" else "more"
    # the signal came as the run ended: nothing left to do, on any node (a node that went on
    # would wait for node 0 in torchrun's rendezvous until the job's time ran out)
    if mode == "continue" and finished_run(env("GITEXP_TAG"), env("SLURM_JOB_ID"), say=node_rank == "0"):
        return 0
    os.execve(sys.executable, [sys.executable, "scripts/experiment.py", mode], dict(os.environ, **variables))


def finished_run(tag, job, say=True):
    """Whether the run Slurm job `job` recorded is finished (said so, where `say`); False where it
    has none."""
    from experiment import run_of_job
    from store import RESULTS as results, read_statistic
    number = run_of_job(tag, job)
    if number is None or read_statistic(results / tag / str(number)).get("status") != "finished":
        return False
    if say:
        print(f"{tag}/{number} of job {job} is finished: nothing to continue")
    return True


def sweep_task(variables):
    from store import claim_sweep_run as claim, sweep_step as next_step
    record = json.loads(Path(env("GITEXP_SWEEP_TASKS")).read_text())
    tag, values, k = record["runs"][int(env("SLURM_ARRAY_TASK_ID"))]
    name = record["sweep"]
    held = claim(tag, name, k)
    if held is None:
        print(f"sweep {name}: {tag} run {k} is running elsewhere")
        return 0
    step, number = next_step(tag, name, k)
    if step == "done":
        print(f"sweep {name}: {tag} run {k} is finished ({tag}/{number})")
        return 0
    os.set_inheritable(held.fileno(), True)  # the claim lives as long as the run
    variables.update(TAG=tag, ID="" if number is None else str(number),
                     GITEXP_SWEEP=json.dumps({"sweep": name, "point": values, "run": k}))
    mode = "more" if step == "new" else "continue"
    os.execve(sys.executable, [sys.executable, "scripts/experiment.py", mode], dict(os.environ, **variables))


def main():
    run_mode({"submit": submit, "node": node})


if __name__ == "__main__":
    main()
