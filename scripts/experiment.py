"""Start, continue or rerun one experiment: `python scripts/experiment.py run|more|continue|rerun`.

Called by `make run/more/continue/rerun` (and for each run of `make sweep`); its input comes from the environment (TAG, ID, FIX, GPUS,
NPROC, MSG, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, PY), never pasted into a shell.
Everything is checked before anything is written; a bad value stops it with one line.
Only the standard library is used: it starts fast and needs no torch.
"""
import ast
import getpass
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

import tb  # scripts/tb.py, beside this file
from record import UserError, hold, run_mode, status_of, used_ids  # UserError: a user's mistake, one line
from title import flatten  # the keys make title names, e.g. best.test_acc

RESULTS = Path("__result__")
TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NUMBER = re.compile(r"0|[1-9][0-9]{0,8}")
REFUSED = 3  # main.py's exit status for "bad input, nothing changed"
STOPPED = 75  # main.py's for "stopped on request after a checkpoint: continuable" (gitexp/stop.py)
interrupted = False  # Ctrl+C (or a sweep's stop) reached the run: it ends "stopped", continuable



# ---- checking input ---------------------------------------------------------------------------

def env(name):
    return os.environ.get(name, "")


def check_tag(tag):
    if not tag:
        raise UserError("TAG is missing: name the experiment, e.g. make run TAG=baseline")
    if len(tag) > 100 or not TAG_PATTERN.fullmatch(tag) or tag.endswith((".", ".lock")) or ".." in tag:
        raise UserError(f"TAG {tag!r} is not a valid tag: use letters, digits, '.', '_' and '-', "
                        "starting with a letter or digit")
    if git("check-ref-format", f"refs/tags/{tag}", check=False).returncode != 0:
        raise UserError(f"TAG {tag!r} is not a valid git tag name (git check-ref-format): choose another")
    if tag == "HEAD" or commit_of(f"refs/heads/{tag}") is not None:
        raise UserError(f"TAG {tag!r} is the name of a branch: a tag of that name would shadow it, choose another")
    return tag


def check_number(name, value):
    if not NUMBER.fullmatch(value):
        raise UserError(f"{name}={value!r} is not a number: give a non-negative integer, e.g. {name}=0")
    return int(value)


def check_fix(value):
    if value not in ("", "0", "1"):
        raise UserError(f"FIX={value!r} is not 0 or 1: FIX=1 fixes the seed (code/seed) and makes kernels deterministic")
    return value == "1"


def devices_given():
    return any(env(name) for name in ("GPUS", "NPROC", "NNODES", "NODE_RANK"))


def parse_devices(gpus=None, nproc=None, nnodes=None):
    """(processes on this node, nodes, this node's rank, the CUDA_VISIBLE_DEVICES to set or None),
    from GPUS, NPROC and NNODES (or the values given instead, a run's recorded ones)."""
    gpus = env("GPUS") if gpus is None else gpus
    nproc = env("NPROC") if nproc is None else nproc
    nnodes = env("NNODES") if nnodes is None else nnodes
    if gpus and nproc:
        raise UserError("GPUS and NPROC were both given: GPUS=0,1 runs one process per GPU, NPROC=n n processes on CPU")
    if gpus:
        if not re.fullmatch(r"[0-9]{1,3}(,[0-9]{1,3})*", gpus):
            raise UserError(f"GPUS={gpus!r} is not a list of GPU indices: use e.g. GPUS=0 or GPUS=0,1")
        indices = [int(g) for g in gpus.split(",")]
        if len(set(indices)) != len(indices):
            raise UserError(f"GPUS={gpus!r} names a GPU twice: list each GPU once")
        count = cuda_device_count()
        if count == 0:
            raise UserError(f"GPUS={gpus} was given but CUDA is not available here: leave GPUS out to run on CPU")
        missing = [i for i in indices if i >= count]
        if missing:
            raise UserError(f"GPUS={gpus}: there is no GPU {missing[0]} (this machine has {count}: 0-{count - 1})")
        processes, visible = len(indices), gpus
    elif nproc:
        processes, visible = check_number("NPROC", nproc), ""  # no GPU visible: gloo on CPU, as promised
        if not 1 <= processes <= 256:
            raise UserError(f"NPROC={nproc} is out of range: give 1 to 256 processes")
    else:
        processes, visible = 1, None
    nodes = check_number("NNODES", nnodes) if nnodes else 1
    if nodes < 1:
        raise UserError("NNODES=0 is out of range: give the number of machines, 1 or more")
    node_rank = check_number("NODE_RANK", env("NODE_RANK")) if env("NODE_RANK") else 0
    if node_rank >= nodes:
        raise UserError(f"NODE_RANK={node_rank} is not below NNODES={nodes}: number the machines 0 to {nodes - 1}")
    if nodes > 1:
        if not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", env("MASTER_ADDR")):
            raise UserError("NNODES>1 needs MASTER_ADDR, the address of the node with NODE_RANK=0 (a host name or IP)")
        if not env("MASTER_PORT"):
            raise UserError("NNODES>1 needs MASTER_PORT, a free port on the MASTER_ADDR node, e.g. MASTER_PORT=29500")
    if env("MASTER_PORT") and not 1 <= check_number("MASTER_PORT", env("MASTER_PORT")) <= 65535:
        raise UserError(f"MASTER_PORT={env('MASTER_PORT')} is not a port: give 1-65535")
    return processes, nodes, node_rank, visible


def cuda_device_count():
    """The GPUs GPUS can name: those of the machine, as CUDA_VISIBLE_DEVICES=GPUS will see them."""
    probe_env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    probe = subprocess.run([python(), "-c", "import torch; print(torch.cuda.device_count())"],
                           capture_output=True, text=True, env=probe_env)
    return int(probe.stdout.strip() or 0) if probe.returncode == 0 else 0


def python():
    return env("PY") or sys.executable


# ---- the conditions of a run: recorded, and enforced on continue and rerun ----------------------

def thread_count(processes, runs_at_once=1):
    """One thread policy for run, more, continue, rerun and sweep: each process gets an equal
    share of the CPUs this launcher may use (taskset's and Slurm's limits count), as torch would
    take them all for one process; OMP_NUM_THREADS set in the environment wins. A thread count
    changes a CPU run's numbers (float sums split differently), so it is recorded, and continue
    and rerun use the recorded one."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if NUMBER.fullmatch(given) and int(given) > 0:
        return int(given)
    return max(1, len(os.sched_getaffinity(0)) // (processes * runs_at_once))


def conditions(devices, threads):
    """What, besides code, data and seed, changes a run's numbers: statistic.json's "conditions"."""
    processes, nodes, _, visible = devices
    return {"world_size": processes * nodes, "nodes": nodes, "processes_per_node": processes,
            "gpus": visible or None, "nproc": processes if visible == "" else None, "threads": threads}


def recorded_devices(statistic):
    """The devices a run was started with, for its continue and rerun: GPUS, NPROC, NNODES as
    its record says (a run recorded before conditions were: its world size on CPU)."""
    recorded = statistic.get("conditions") or {}
    nodes = recorded.get("nodes", 1)
    if nodes > 1 and not env("NNODES"):
        name = f"{statistic['tag']}/{statistic['id']}"
        raise UserError(f"{name} ran on {nodes} nodes: give NNODES={nodes} with NODE_RANK, MASTER_ADDR and "
                        "MASTER_PORT on each node (a Slurm job gives them), as it was started")
    gpus, nproc = recorded.get("gpus") or "", recorded.get("nproc")
    if not recorded and statistic.get("world_size", 1) > 1:
        nproc = statistic["world_size"]
    return parse_devices(gpus, str(nproc) if nproc and not gpus else "", env("NNODES"))


# ---- git ----------------------------------------------------------------------------------------

def git(*args, check=True, identity=False):
    """Run git; with `identity`, fall back to a local name and e-mail where git has none
    (a fresh machine), since annotated tags and commits need one."""
    command = ["git"]
    if identity:
        for key, fallback in (("user.name", getpass.getuser()),
                              ("user.email", f"{getpass.getuser()}@{socket.gethostname()}")):
            if subprocess.run(["git", "config", key], capture_output=True).returncode != 0:
                command += ["-c", f"{key}={fallback}"]
    result = subprocess.run(command + list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise UserError(f"git {args[0]} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return result


def commit_of(ref):
    result = git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def describe(commit):
    return git("log", "-1", "--format=%h (%s)", commit).stdout.strip()


def ensure_clean_tree(message):
    """Refuse uncommitted changes to tracked files, or commit them with MSG. Untracked files
    are never touched."""
    if commit_of("HEAD") is None:
        raise UserError("this repository has no commit yet: commit your code first (git add -A && git commit -m ...)")
    changed = git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    if not changed:
        return
    if not message:
        files = ", ".join(line[3:] for line in changed[:10]) + (" ..." if len(changed) > 10 else "")
        raise UserError(f"uncommitted changes to tracked files ({files}): commit them, "
                        f"or give MSG=\"...\" to commit them before the run")
    git("commit", "--quiet", "--all", "--message", message, identity=True)
    print(f"committed {len(changed)} changed file(s): {describe('HEAD')}")


def tag_head(tag):
    """Tag HEAD as `tag`; reuse it where it already marks HEAD."""
    head = commit_of("HEAD")
    for _ in range(2):  # a second pass covers a run that created the same tag a moment ago
        tagged = commit_of(f"refs/tags/{tag}")
        if tagged == head:
            return head
        if tagged is not None:
            raise UserError(f"tag {tag} is at {describe(tagged)}, not at HEAD {describe(head)}: "
                            f"choose a new TAG, or reproduce {tag} with make rerun TAG={tag}")
        git("tag", "--annotate", "--message", f"gitexp experiment {tag}", tag, head, check=False, identity=True)
    raise UserError(f"could not create tag {tag}: see git tag -l {tag}")


def existing_tag(tag):
    commit = commit_of(f"refs/tags/{tag}")
    if commit is None:
        raise UserError(f"unknown tag {tag}: no git tag of that name (make ls lists the experiments)")
    return commit


# ---- the experiment folder ---------------------------------------------------------------------

def now():
    return datetime.now().astimezone().isoformat(timespec="seconds")


def read_statistic(folder):
    try:
        return json.loads((folder / "statistic.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no statistic.json: it is not an experiment")
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{folder}/statistic.json is not valid JSON ({error}): restore it or remove {folder}")
    except OSError as error:
        raise UserError(f"{folder}/statistic.json cannot be read ({error.strerror}): fix its permissions")


def write_statistic(folder, statistic):
    path = folder / "statistic.json"
    tmp = folder / f".statistic.json.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(statistic, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_folder(tag):
    """mkdir the next id, past every id the tag ever gave (the trash's too): mkdir is atomic, so
    runs started at once never share an id."""
    root = RESULTS / tag
    root.mkdir(parents=True, exist_ok=True)
    number = max(used_ids(tag), default=-1) + 1
    while True:
        try:
            (root / str(number)).mkdir()
            return root / str(number), number
        except FileExistsError:
            number += 1


def lock(folder):
    """Hold the experiment's lock for as long as this process lives; None if another has it."""
    return hold(folder / ".lock")


def check_runnable():
    """Before anything is committed or tagged: code/main.py is tracked (what MSG would commit
    is what the working tree holds)."""
    if git("ls-files", "--error-unmatch", "code/main.py", check=False).returncode != 0:
        raise UserError("code/main.py is not committed: commit the experiment's code under code/")


def snapshot(tag, folder):
    """Extract the tag's code/ into the experiment folder: the run executes exactly that."""
    if (folder / "code" / "main.py").exists():
        return
    archive = subprocess.run(["git", "archive", "--format=tar", f"refs/tags/{tag}", "--", "code"],
                             capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")


def init_from_of(config_text):
    """config.py's init_from, read as data: None where it is absent or None."""
    try:
        body = ast.parse(config_text).body
    except SyntaxError:
        return None  # main.py reports it
    for node in body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["init_from"]:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return "?"  # not a literal: main.py's check says so
    return None


def init_fits(tag=None, expected=None):
    """Before anything is written: where config.py (the working tree's, or tag's) sets init_from,
    main.py checks in one process that it names a checkpoint that exists and fits the model (for
    a rerun: the same bytes as the original's). False when refused; main.py said why."""
    text = Path("code/config.py").read_text() if tag is None else \
        git("show", f"refs/tags/{tag}:code/config.py").stdout
    if init_from_of(text) is None:
        return True
    with tempfile.TemporaryDirectory() as folder:
        if tag is None:  # the tracked files, as a MSG commit would record them
            for name in filter(None, git("ls-files", "-z", "code").stdout.split("\0")):
                (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(name, Path(folder) / name)
        else:
            snapshot(tag, Path(folder))
        check = subprocess.run([python(), str(Path(folder) / "code" / "main.py")],
                               env=child_environment(None, GITEXP_MODE="check-init", **init_expected(expected)))
    return check.returncode == 0


def init_expected(source):
    """What main.py must find again where a recorded run started from another (GITEXP_INIT)."""
    return {"GITEXP_INIT": json.dumps({"epoch": source["epoch"], "sha256": source["sha256"]})} if source else {}


def fixed_seed():
    """The seed FIX=1 uses: code/seed, committed (or about to be, with MSG)."""
    tracked = git("ls-files", "--error-unmatch", "code/seed", check=False).returncode == 0
    text = Path("code/seed").read_text().strip() if tracked and Path("code/seed").is_file() else ""
    if not NUMBER.fullmatch(text):
        raise UserError(f"code/seed must hold one non-negative integer for FIX=1, not {text[:20]!r}: fix it and commit")
    return int(text)


# ---- running ------------------------------------------------------------------------------------

def command(folder, processes, nodes, node_rank):
    main = str(folder / "code" / "main.py")
    if processes == 1 and nodes == 1 and not env("NNODES"):  # NNODES=1: torchrun even for one process
        return [python(), main]
    launcher = [python(), "-m", "torch.distributed.run", f"--nproc-per-node={processes}", f"--nnodes={nodes}"]
    if nodes == 1:
        launcher.append("--standalone")  # picks a free port itself
    else:
        launcher += [f"--node-rank={node_rank}", f"--master-addr={env('MASTER_ADDR')}",
                     f"--master-port={env('MASTER_PORT')}"]
    return launcher + [main]


def child_environment(visible, threads=None, **extra):
    child_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    if visible is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = visible
    if threads is not None:  # torch's intra-op threads; torchrun keeps a value it finds set
        child_env["OMP_NUM_THREADS"] = child_env["MKL_NUM_THREADS"] = str(threads)
    return child_env


def execute(folder, mode, devices, threads, init=None, **extra):
    """Run main.py, copying its stdout to the terminal and to the log (stderr, where tqdm draws
    its bars, goes to the terminal only). Returns main.py's exit status."""
    processes, nodes, node_rank, visible = devices
    child_env = child_environment(visible, threads, GITEXP_DIR=str(folder), GITEXP_MODE=mode,
                                  **init_expected(init), **accepting_data(), **extra)
    # a background TensorBoard over every experiment, one per project; a continue may still be
    # refused by main.py, so it waits for main.py's first line, printed once the resume is accepted
    live_tensorboard = env("TB") != "0"
    if live_tensorboard and mode != "continue":
        tb.serve_live()
        live_tensorboard = False
    global interrupted
    stop_file = folder / ".stop"
    stop_file.unlink(missing_ok=True)  # a request that an earlier run did not live to read

    def ask_stop(*_):  # SIGTERM, SIGUSR1: every rank reads the file at its next step
        stop_file.touch()
    handlers = {number: signal.signal(number, ask_stop) for number in (signal.SIGTERM, signal.SIGUSR1)}
    with open(folder / "log", "ab") as log:
        child = subprocess.Popen(command(folder, processes, nodes, node_rank), stdout=subprocess.PIPE, env=child_env,
                                 preexec_fn=ignore_usr1)
        while True:
            try:
                chunk = os.read(child.stdout.fileno(), 65536)
            except KeyboardInterrupt:
                interrupted = True  # Ctrl+C reached main.py too (torchrun's workers: by the file)
                stop_file.touch()
                continue  # keep copying until it has ended
            if not chunk:
                break
            if live_tensorboard:
                tb.serve_live()
                live_tensorboard = False
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            log.write(chunk)
            log.flush()
        while True:
            try:
                status = child.wait()
                break
            except KeyboardInterrupt:
                interrupted = True
                continue
    for number, handler in handlers.items():
        signal.signal(number, handler)
    stop_file.unlink(missing_ok=True)
    return status


def log_size(folder):
    log = folder / "log"
    return log.stat().st_size if log.exists() else 0


def first_error(folder, offset):
    """The first `error:` line main.py (any rank) printed into the log after `offset`."""
    with open(folder / "log", "rb") as log:
        log.seek(offset)
        for line in log.read().decode(errors="replace").splitlines():
            if line.startswith("error: "):
                return line[len("error: "):].strip()
    return None


def conclude(folder, status, log_offset=0):
    """After main.py: mark a crash as failed, print where everything is; for a failure, the
    error main.py printed, whichever rank it came from (torchrun's own report hides it)."""
    statistic = read_statistic(folder)
    stopped = interrupted or status in (STOPPED, 130, -signal.SIGINT)
    if status != 0 and statistic.get("status") == "running":
        statistic.update(status="stopped" if stopped else "failed", end=now())
        write_statistic(folder, statistic)
    name = f"{statistic['tag']}/{statistic['id']}"
    if status != 0 and (stopped or statistic.get("status") == "stopped"):
        print(f"stopped: experiment {name} goes on from its last checkpoint with make continue "
              f"TAG={statistic['tag']} ID={statistic['id']}", file=sys.stderr)
        return statistic
    if status != 0:
        cause = first_error(folder, log_offset)
        print(f"error: experiment {name} failed (exit status {status}){': ' + cause if cause else ''}; "
              f"the whole error is in {folder}/log", file=sys.stderr)
        return statistic
    print(f"experiment {name} {statistic['status']}: results in {folder}/ (log, statistic.json, checkpoint/, tensorboard/)")
    return statistic


def start(tag, number, folder, commit, seed, fix, devices, threads, init=None, **extra):
    processes, nodes, _, _ = devices
    statistic = {"tag": tag, "id": number, "commit": commit, "status": "running", "seed": seed, "fix": fix,
                 "host": socket.gethostname(), "start": now(), "end": None, "epoch": 0,
                 "world_size": processes * nodes, "conditions": conditions(devices, threads),
                 "hparams": {}, "metrics": {}, "durations": {}}
    if env("GITEXP_SLURM_JOB"):  # scripts/slurm.sbatch: a requeued job continues this run
        statistic["slurm_job"] = env("GITEXP_SLURM_JOB")
    statistic.update(extra)  # rerun_of, repeat_of, or sweep, point and sweep_run
    write_statistic(folder, statistic)
    print(f"experiment {tag}/{number}: commit {commit[:10]}, seed {seed}{' (FIX=1)' if fix else ''}, "
          f"{processes * nodes} process(es), {threads} thread(s) each")
    return execute(folder, "run", devices, threads, init)


def follow(tag, devices):
    """Another machine of a multi-node run: train with the tag's code and write nothing.
    Node 0 records the experiment and sends every rank its seed and checkpoint."""
    deadline = time.monotonic() + 120
    while commit_of(f"refs/tags/{tag}") is None:  # node 0 may not have tagged yet
        if time.monotonic() > deadline:
            raise UserError(f"tag {tag} is unknown on this node: start node 0 first, or git fetch --tags")
        time.sleep(1)
    processes, nodes, node_rank, visible = devices
    print(f"node {node_rank} of {nodes}: training {tag} with node 0 at {env('MASTER_ADDR')}:{env('MASTER_PORT')}")
    for number in (signal.SIGTERM, signal.SIGUSR1):  # node 0's launcher and ranks decide the stop
        signal.signal(number, signal.SIG_IGN)
    with tempfile.TemporaryDirectory() as folder:
        snapshot(tag, Path(folder))
        return subprocess.run(command(Path(folder), processes, nodes, node_rank), preexec_fn=ignore_usr1,
                              env=child_environment(visible, thread_count(processes))).returncode


def ignore_usr1():
    """In the launched process before exec: srun sends USR1 to every process of a job step, and
    torchrun, which has no handler for it, would die of it and take its workers down. Ignored
    there, main.py's own handler (gitexp/stop.py) still takes it in each worker."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def check_tag_free(tag, message):
    """Before anything is committed: would HEAD, after a MSG commit, be where tag `tag` is?"""
    tagged, head = commit_of(f"refs/tags/{tag}"), commit_of("HEAD")
    if tagged is None or head is None:
        return
    will_commit = message and git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    if tagged != head or will_commit:
        raise UserError(f"tag {tag} is at {describe(tagged)}, not at {'the commit MSG would make' if tagged == head else 'HEAD ' + describe(head)}: "
                        f"choose a new TAG, or reproduce {tag} with make rerun TAG={tag}")


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


def tag_seed(tag):
    """The seed FIX=1 uses for a run of an existing tag: the tag's own code/seed."""
    shown = git("show", f"refs/tags/{tag}:code/seed", check=False)
    text = shown.stdout.strip() if shown.returncode == 0 else ""
    if not NUMBER.fullmatch(text):
        raise UserError(f"tag {tag} has no code/seed holding one non-negative integer: FIX=1 needs it")
    return int(text)


def sweep_facts():
    """What scripts/sweep.py says of the run it starts (GITEXP_SWEEP, never a user's variable)."""
    given = os.environ.get("GITEXP_SWEEP")
    if not given:
        return {}, 1
    facts = json.loads(given)
    return {"sweep": facts["sweep"], "point": facts["point"], "sweep_run": facts["run"]}, facts.get("at_once", 1)


def runs_of_tag(tag):
    """[(id, statistic)] of every experiment of `tag`, in id order."""
    root = RESULTS / tag
    ids = sorted(int(p.name) for p in root.iterdir() if NUMBER.fullmatch(p.name)) if root.is_dir() else []
    return [(n, read_statistic(root / str(n))) for n in ids if (root / str(n) / "statistic.json").exists()]


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


def experiment_folder(tag, number):
    folder = RESULTS / tag / str(number)
    if not (folder / "statistic.json").exists():
        raise UserError(f"there is no experiment {tag}/{number} (make ls TAG={tag} shows its ids)")
    return folder


def check_same_code(folder, statistic, commit):
    if statistic.get("commit") != commit:
        raise UserError(f"{folder} was run with commit {str(statistic.get('commit'))[:10]}, but tag "
                        f"{statistic.get('tag')} is now at {commit[:10]}: it is another code's experiment")


def latest_checkpoint(folder):
    """The name of the newest checkpoint file in folder/checkpoint (epoch_<n>.pth, or
    step_<e>_<k>.pth inside an epoch), or None."""
    found = []
    for path in (folder / "checkpoint").glob("*.pth"):
        match = re.fullmatch(r"epoch_(\d+)\.pth|step_(\d+)_(\d+)\.pth", path.name)
        if match and not path.is_symlink():
            epoch, inside, done = match.groups()
            found.append(((int(epoch), 0) if epoch else (int(inside), int(done)), path.name))
    return max(found)[1] if found else None


def devices_and_threads(statistic, given):
    """The devices and thread count a continue or rerun of `statistic`'s run uses: the recorded
    ones, unless GPUS, NPROC or NNODES were given (`given`: then the thread policy's for them)."""
    if given is not None:
        return given, thread_count(given[0])
    devices = recorded_devices(statistic)
    return devices, (statistic.get("conditions") or {}).get("threads") or thread_count(devices[0])


def check_resumable(folder, statistic, devices, threads):
    """Refuse, before anything starts, a continue that could not be exact: the checkpoints its
    record promises are gone, or the conditions differ where the checkpoint is inside an epoch
    (each rank's place in its shard is only meaningful for the same world size)."""
    name, tag, number = f"{statistic['tag']}/{statistic['id']}", statistic["tag"], statistic["id"]
    latest = latest_checkpoint(folder)
    if latest is None and (statistic.get("epoch") or statistic.get("step")):
        raise UserError(f"{name} is recorded at epoch {statistic.get('epoch')}, step {statistic.get('step')}, but "
                        f"{folder}/checkpoint/ holds no checkpoint: restore them and continue; or make rerun TAG={tag} "
                        f"ID={number} (a new id, from the start); or make rm EXP={name}")
    recorded = statistic.get("conditions") or {"world_size": statistic.get("world_size", 1)}
    now = {"world_size": devices[0] * devices[1], "threads": threads}
    changed = [f"{key.replace('_', ' ')} {recorded[key]} -> {now[key]}" for key in now
               if recorded.get(key) is not None and recorded[key] != now[key]]
    if changed and latest and latest.startswith("step_"):
        raise UserError(f"{name} stopped inside an epoch ({latest}) with {'; '.join(changed)}: continue it as it "
                        f"ran (make continue TAG={tag} ID={number}, without GPUS/NPROC/NNODES, takes its own)")
    return changed


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
    folder = experiment_folder(tag, number)
    statistic = read_statistic(folder)
    if statistic.get("status") == "finished":
        raise UserError(f"{tag}/{number} is already finished: make rerun TAG={tag} ID={number} reproduces it")
    check_same_code(folder, statistic, commit)
    devices, threads = devices_and_threads(statistic, given)
    held = lock(folder)
    if held is None:
        raise UserError(f"{tag}/{number} is running right now: wait for it, or stop it first")
    changed = check_resumable(folder, statistic, devices, threads)
    # main.py records the change once the continue is accepted (a refusal changes nothing)
    other_conditions = {"GITEXP_CONDITIONS": json.dumps(conditions(devices, threads))} if changed else {}
    if changed:
        print(f"note: {tag}/{number} goes on from an epoch's end with {'; '.join(changed)}: its numbers will differ "
              "from an uninterrupted run's (recorded under conditions.changed)")
    snapshot(tag, folder)
    processes, nodes, _, visible = devices
    if processes * nodes > 1:  # under torchrun, a refusal would look like a crash: ask first
        check = subprocess.run([python(), str(folder / "code" / "main.py")],
                               env=child_environment(visible, threads, GITEXP_DIR=str(folder), GITEXP_MODE="check",
                                                     **accepting_data()))
        if check.returncode != 0:
            return 1  # main.py said why; nothing was changed
    offset = log_size(folder)
    status = execute(folder, "continue", devices, threads, statistic.get("init_from"), **other_conditions)
    if status == REFUSED:
        return 1  # main.py said why; nothing was changed
    conclude(folder, status, offset)
    held.close()
    return status


def accepting_data():
    """ACCEPT_DATA=1: a continue goes on over data whose fingerprint changed, which the user
    declares the same data (a re-sync, a copy); the record keeps both fingerprints."""
    if env("ACCEPT_DATA") not in ("", "0", "1"):
        raise UserError(f"ACCEPT_DATA={env('ACCEPT_DATA')!r} is not 0 or 1: ACCEPT_DATA=1 lets make continue go on "
                        "over changed data you declare unchanged")
    return {"GITEXP_ACCEPT_DATA": "1"} if env("ACCEPT_DATA") == "1" else {}


def compare(original, rerun):
    name = f"{original['tag']}/{original['id']}"
    if original.get("status") != "finished":
        print(f"{name} did not finish ({original.get('status')}): no metrics to compare")
        return
    before, after = (flatten(s.get("metrics", {}), "", {}) for s in (original, rerun))
    differ = [k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]
    if not differ:
        print(f"metrics equal to {name}: all {len(before)} values identical")
        return
    print(f"metrics differ from {name} in {len(differ)} of {len(before)} values:")
    for key in differ:
        print(f"  {key}: {before.get(key)} -> {after.get(key)}")
    causes = [f"{fact} {a} -> {b}" for fact, (a, b) in run_facts(original, rerun).items() if a != b]
    checked = ", ".join(run_facts(original, original))
    if causes:
        print(f"the two runs differ in: {'; '.join(causes)}")
    elif not original.get("fix"):
        print(f"the two runs differ in none of {checked}: {name} ran without FIX=1, so kernels need not be deterministic")
    else:
        print(f"the two runs differ in none of {checked}")


def run_facts(original, rerun):
    """What a run ran with besides its code and seed, for both runs: {fact: (original, rerun)}."""
    def facts(statistic):
        environment, data = statistic.get("environment"), statistic.get("data") or {}
        conditions = statistic.get("conditions") or {}
        if not environment:  # recorded by an older template
            environment = dict.fromkeys(("python", "torch", "cuda", "cudnn", "gpus"), "unrecorded")
        return {"data fingerprint": data.get("fingerprint", "unrecorded")[:12],
                "data changed during the run": "yes" if data.get("at_end") else "no",
                "python": environment["python"], "torch": environment["torch"],
                "CUDA": environment["cuda"], "cuDNN": environment["cudnn"],
                "world size": statistic.get("world_size"), "nodes": conditions.get("nodes", "unrecorded"),
                "threads": environment.get("threads", conditions.get("threads", "unrecorded")),
                "deterministic": environment.get("deterministic", "unrecorded"),
                "device": environment.get("device", "unrecorded"),
                "continued with other conditions": len(conditions.get("changed", [])),
                "host": statistic.get("host"),
                "GPU": environment["gpus"] if isinstance(environment["gpus"], str)
                else ", ".join(environment["gpus"]) or "none"}
    a, b = facts(original), facts(rerun)
    return {fact: (a[fact], b[fact]) for fact in a}


def do_rerun():
    tag = check_tag(env("TAG"))
    given = parse_devices() if devices_given() else None
    if given is not None and given[2] > 0:
        return follow(tag, given)
    commit = existing_tag(tag)
    number = check_number("ID", env("ID")) if env("ID") else 0
    source = experiment_folder(tag, number)
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
