"""Running code/main.py for one experiment: its command (python, or torchrun), its environment
(gitexp.protocol's), the log, signals passed on as the stop file, and what the launcher says
once it has ended. Standard library only: it starts fast and needs no torch.
"""
import ast
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import tb  # scripts/tb.py, beside this file
from cli import UserError, env
from conditions import conditions, python, thread_count
from gitexp import protocol
from repo import commit_of, git, snapshot
from store import read_statistic, write_statistic

interrupted = False  # Ctrl+C (or a sweep's stop) reached the run: it ends "stopped", continuable


def now():
    return datetime.now().astimezone().isoformat(timespec="seconds")


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
                               env=child_environment(None, **protocol.environment(None, protocol.CHECK_INIT, expected)))
    return check.returncode == 0


def accepting_data():
    """ACCEPT_DATA=1: a continue goes on over data whose fingerprint changed, which the user
    declares the same data (a re-sync, a copy); the record keeps both fingerprints."""
    if env("ACCEPT_DATA") not in ("", "0", "1"):
        raise UserError(f"ACCEPT_DATA={env('ACCEPT_DATA')!r} is not 0 or 1: ACCEPT_DATA=1 lets make continue go on "
                        "over changed data you declare unchanged")
    return env("ACCEPT_DATA") == "1"


def command(folder, processes, nodes, node_rank):
    main = str(folder / "code" / "main.py")
    if processes == 1 and nodes == 1 and not env("NNODES"):  # NNODES=1: torchrun even for one process
        return [python(), main]
    # torchrun, less its traceback where the run stopped on request: the run's own
    # gitexp/torchrun.py (a run recorded before it had one: torchrun itself)
    wrapper = folder / "code" / "gitexp" / "torchrun.py"
    launcher = [python(), *([str(wrapper)] if wrapper.exists() else ["-m", "torch.distributed.run"]),
                f"--nproc-per-node={processes}", f"--nnodes={nodes}"]
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


def resume_accepted(folder, devices, threads):
    """Before a continue under torchrun, where a refusal would look like a crash: whether
    main.py accepts the resume (protocol.CHECK_RESUME, one process; it says why not)."""
    processes, nodes, _, visible = devices
    if processes * nodes == 1:
        return True
    check = subprocess.run([python(), str(folder / "code" / "main.py")],
                           env=child_environment(visible, threads, **protocol.environment(
                               folder, protocol.CHECK_RESUME, accept_data=accepting_data())))
    return check.returncode == 0


def execute(folder, mode, devices, threads, init=None, changed=False):
    """Run main.py, copying its stdout to the terminal and to the log (stderr, where tqdm draws
    its bars, goes to the terminal only). Returns main.py's exit status. `changed`: a continue
    goes on with other conditions, which main.py records once it accepts the resume (a
    refusal changes nothing)."""
    processes, nodes, node_rank, visible = devices
    child_env = child_environment(visible, threads, **protocol.environment(
        folder, mode, init, conditions(devices, threads) if changed else None, accepting_data()))
    # a background TensorBoard over every experiment, one per project; a continue may still be
    # refused by main.py, so it waits for protocol.STARTED, written once the resume is accepted
    live_tensorboard = env("TB") != "0"
    if live_tensorboard and mode != protocol.CONTINUE:
        tb.serve_live()
        live_tensorboard = False
    global interrupted
    protocol.clear(folder)  # a stop request, handshake or error of an earlier leg
    stop_file = folder / protocol.STOP

    def ask_stop(*_):  # SIGTERM, SIGUSR1: every rank reads the file at its next step
        stop_file.touch()
    handlers = {number: signal.signal(number, ask_stop) for number in (signal.SIGTERM, signal.SIGUSR1)}
    stop_with_parent()
    with open(folder / "log", "ab") as log:
        child = subprocess.Popen(command(folder, processes, nodes, node_rank), stdout=subprocess.PIPE, env=child_env,
                                 preexec_fn=ignore_usr1)
        while True:
            try:
                ready = select.select([child.stdout], [], [], 0.5)[0]
                if live_tensorboard and protocol.started(folder):
                    tb.serve_live()
                    live_tensorboard = False
                if not ready:
                    continue
                chunk = os.read(child.stdout.fileno(), 65536)
            except KeyboardInterrupt:
                interrupted = True  # Ctrl+C reached main.py too (torchrun's workers: by the file)
                stop_file.touch()
                continue  # keep copying until it has ended
            if not chunk:
                break
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
    protocol.clear(folder, keep_error=True)  # conclude reads the error
    return status


def conclude(folder, status):
    """After main.py: mark a crash as failed, print where everything is; for a failure, the
    error main.py recorded (protocol.ERROR), whichever rank it came from (torchrun's own report
    hides it), also kept in statistic.json's `error`."""
    statistic = read_statistic(folder)
    stopped = interrupted or status in (protocol.STOPPED, protocol.INTERRUPTED, -signal.SIGINT)
    cause = None if stopped else protocol.first_error(folder)
    protocol.clear(folder)
    said = statistic.get("status") == "stopped"  # the loop stopped it at a step, and said so
    if status != 0 and statistic.get("status") == "running":
        statistic.update(status="stopped" if stopped else "failed", end=now())
        leg = (statistic.get("legs") or [{}])[-1]
        leg.update(end=statistic["end"], ended=statistic["status"], **({"error": cause} if cause else {}))
        if cause:
            statistic["error"] = cause
        write_statistic(folder, statistic)
    name = f"{statistic['tag']}/{statistic['id']}"
    if status != 0 and (stopped or statistic.get("status") == "stopped"):
        if not said:  # stopped at once (a second Ctrl+C): from the last checkpoint
            print(f"stopped: {name} at once: make continue TAG={statistic['tag']} ID={statistic['id']} goes on from "
                  f"its last checkpoint (step {statistic.get('step', 0)})", file=sys.stderr)
        return statistic
    if status != 0:
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


def stop_with_parent():
    """Where whoever started the launcher ends (make killed, a supervisor's script gone), a
    SIGTERM asks the run to stop (Linux's PR_SET_PDEATHSIG): nothing of a run outlives its make
    by more than the stop takes."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before the request
        os.kill(os.getpid(), signal.SIGTERM)


def ignore_usr1():
    """In the launched process before exec: srun sends USR1 to every process of a job step, and
    torchrun, which has no handler for it, would die of it and take its workers down. Ignored
    there, main.py's own handler (gitexp/stop.py) still takes it in each worker."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
