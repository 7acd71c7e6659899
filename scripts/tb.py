"""TensorBoard over the experiments: `python scripts/tb.py serve|stop`, and serve_live().

    make tb TAGS="a b/2" [PORT=n] [HOST=h]   # compare runs: a bare tag means all its ids
    make tb LIST=name                       # the runs of an experiment list (a sweep's, say)
    make tb-stop                            # stop the project's background TensorBoard
    make run / continue / rerun             # experiment.py calls serve_live() (TB=0: not)

Each run appears under its name tag/id: TensorBoard serves (--logdir) a tree of links named
that way, e.g. __statistic__/tb/6006/a/0 -> ../../../../__result__/a/0/tensorboard (its own
help discourages --logdir_spec). `make tb` serves in the foreground until Ctrl+C; the live
server serves __statistic__/tb/live/ (every experiment) in the background, one per project.
Input comes from the environment (TAGS, PORT, HOST), checked before anything is written.
Only the standard library at import: experiment.py imports this file and must start fast.
"""
import errno
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from cli import UserError, env, run_mode
from lists import list_name, read_list
from names import NAME, NUMBER
from store import RESULTS, ids_of
from tb_columns import latest_tags_runs, write_experiment

TREES = Path("__statistic__/tb")  # the trees of links: <port>/ for make tb, live/ for the live server
LIVE = TREES / "live"
LIVE_LOCK = Path("__statistic__/tensorboard.lock")  # held by the live server while it lives
LIVE_LOG = Path("__statistic__/tensorboard.log")
FIRST_PORT, PORTS_TRIED = 6006, 100
RUN_PATTERN = re.compile(rf"({NAME.pattern})(?:/({NUMBER.pattern}))?")  # tag or tag/id
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


# ---- checking input ---------------------------------------------------------------------------

def check_host(value):
    """An IP literal or a host name; 127.0.0.1 when not given."""
    if not value:
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not HOSTNAME.fullmatch(value):
        raise UserError(f"HOST={value!r} is not a host name or IP address: e.g. HOST=127.0.0.1 "
                        "(the default), or HOST=0.0.0.0 for every interface")
    return value


def check_port(value):
    if not NUMBER.fullmatch(value) or not 1 <= int(value) <= 65535:
        raise UserError(f"PORT={value!r} is not a port: give a number from 1 to 65535, e.g. PORT=6006")
    return int(value)


def port_free(host, port):
    """Whether a server could listen on host:port now (probed the way servers bind)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"HOST={host} does not resolve to an address: give a host name of this "
                        "machine or an IP address")
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise UserError(f"HOST={host} is not an address of this machine ({error.strerror}): "
                                "give one of its addresses, or leave HOST out for 127.0.0.1")
    return True


def pick_port(host, given):
    if given:
        port = check_port(given)
        if not port_free(host, port):
            raise UserError(f"PORT={port} is in use on {host} (or needs privileges): choose another "
                            "PORT, or leave PORT out to take the first free one from 6006")
        return port
    for port in range(FIRST_PORT, FIRST_PORT + PORTS_TRIED):
        if port_free(host, port):
            return port
    raise UserError(f"ports {FIRST_PORT}-{FIRST_PORT + PORTS_TRIED - 1} are all in use on {host}: give PORT=n")


def select(text):
    """The (tag, id) pairs that TAGS names, in order; every experiment when TAGS is empty."""
    if not text.split():
        runs = [(p.name, n) for p in sorted(RESULTS.iterdir()) if p.is_dir()
                for n in ids_of(p.name)] if RESULTS.is_dir() else []
        if not runs:
            raise UserError("there are no experiments in __result__/ yet: make run TAG=x makes one")
        return runs
    runs = []
    for word in text.split():
        match = RUN_PATTERN.fullmatch(word)
        if not match or ".." in word:
            raise UserError(f"TAGS: {word!r} is not a tag or tag/id: e.g. TAGS=\"baseline wide/2\"")
        tag, number = match[1], match[2]
        if number is None:
            ids = ids_of(tag)
            if not ids:
                raise UserError(f"TAGS: there is no experiment of tag {tag} in __result__/ (make run TAG={tag} makes one)")
            runs += [(tag, n) for n in ids]
        elif int(number) in ids_of(tag):
            runs.append((tag, int(number)))
        else:
            raise UserError(f"TAGS: there is no experiment {tag}/{number} in __result__/")
    return list(dict.fromkeys(runs))


def list_runs(name):
    """TAGS as the experiment list LIST names them (a sweep's list, say)."""
    if env("TAGS"):
        raise UserError("TAGS and LIST were both given: name the runs one way, TAGS=\"a b/2\" or LIST=name")
    return " ".join(read_list(list_name(name)))


# ---- the tree of links --------------------------------------------------------------------------

def link_tree(root, runs):
    """Make root/<tag>/<id> a relative link to __result__/<tag>/<id>/tensorboard for each run
    (the folder may appear later: TensorBoard looks again every few seconds), and remove the
    links of runs no longer wanted. Runs that start at once may both update the live tree."""
    wanted = {root / tag / str(number): RESULTS / tag / str(number) / "tensorboard" for tag, number in runs}
    for link in [*root.glob("*/*"), *root.glob("*")]:
        if link.is_symlink() and link not in wanted:
            link.unlink(missing_ok=True)
        elif link.is_dir() and link.parent == root and not any(link.iterdir()):
            shutil.rmtree(link, ignore_errors=True)  # a tag whose experiments are gone
    for link, target in wanted.items():
        relative = os.path.relpath(target, link.parent)
        if link.is_symlink() and os.readlink(link) == relative:
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        try:
            link.symlink_to(relative, target_is_directory=True)
        except FileExistsError:  # made by another run a moment ago
            pass
    return root.resolve()


def tensorboard_command(logdir, host, port):
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", host, "--port", str(port)]


def url(host, port):
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


# ---- make tb: compare runs ------------------------------------------------------------------------

def serve():
    """Check TAGS, HOST and PORT, link the runs, then become TensorBoard until Ctrl+C."""
    host = check_host(env("HOST"))
    runs = select(list_runs(env("LIST")) if env("LIST") else env("TAGS"))
    port = pick_port(host, env("PORT"))
    root = TREES / str(port)
    shutil.rmtree(root, ignore_errors=True)  # a tree left by an earlier make tb on this port
    logdir = link_tree(root, runs)
    write_experiment(root, runs)
    names = " ".join(f"{tag}/{number}" for tag, number in runs)
    print(f"TensorBoard: {url(host, port)} ({len(runs)} run(s): {names[:300]}); Ctrl+C stops it", flush=True)
    command = tensorboard_command(logdir, host, port)
    os.execv(command[0], command)


# ---- the live server, one per project -------------------------------------------------------------

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (not yet reaped) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def serves_live_tree(pid):
    """Is `pid` a running TensorBoard over this project's live tree? An info file or the lock
    file can outlive its server (kill -9), and its pid can since belong to another process."""
    if not alive(pid):
        return False
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    return b"tensorboard.main" in words and any(w.decode(errors="replace").endswith(str(LIVE)) for w in words)


def live_servers():
    """The running TensorBoards that serve this project's live tree, as tensorboard.manager
    lists them (each TensorBoard writes an info file with its logdir, port and pid once up)."""
    from tensorboard import manager
    logdir = str(LIVE.resolve())
    return [info for info in manager.get_all() if info.logdir == logdir and serves_live_tree(info.pid)]


def write_lock(lock, port, pid=""):
    lock.truncate(0)
    lock.write(f"{port} {pid}\n")
    lock.flush()


def starting_port(lock):
    """The port in the lock file of a live server that may be starting up; None if unreadable."""
    for _ in range(20):  # the run that holds the lock writes it a moment after taking it
        lock.seek(0)
        words = lock.read().split()
        if words and words[0].isdigit():
            return int(words[0])
        time.sleep(0.05)
    return None


def serve_live():
    """Make sure a TensorBoard serves every experiment of this project, and print its URL.
    Starts one in the background (its own session, so it outlives the run) unless one is
    running or starting; never waits for it to be ready. Problems are only warnings."""
    try:
        LIVE_LOCK.parent.mkdir(parents=True, exist_ok=True)
        runs = [(p.name, int(n.name)) for p in sorted(RESULTS.iterdir()) if p.is_dir()
                for n in p.iterdir() if NUMBER.fullmatch(n.name)] if RESULTS.is_dir() else []
        logdir = link_tree(LIVE, runs)
        try:  # the tree grows as runs start: each start writes the columns anew
            write_experiment(LIVE, latest_tags_runs(runs))
        except Exception as error:
            print(f"warning: the HParams tab's columns are TensorBoard's own ({type(error).__name__}: {error})",
                  file=sys.stderr)
        with open(LIVE_LOCK, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live server holds it: running, or starting up
                running = live_servers()
                port = running[0].port if running else starting_port(lock)
                where = url("127.0.0.1", port) if port else "starting"
                print(f"TensorBoard (live, all experiments): {where} (make tb-stop stops it)")
                return
            port = pick_port("127.0.0.1", "")
            write_lock(lock, port)  # for runs that look while it starts up (no info file yet)
            with open(LIVE_LOG, "ab") as log:
                log.write(f"--- {datetime.now().astimezone().isoformat(timespec='seconds')}: port {port}\n".encode())
                log.flush()
                # the server inherits the lock: it holds it for as long as it lives
                server = subprocess.Popen(tensorboard_command(logdir, "127.0.0.1", port), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          pass_fds=(lock.fileno(),))
            write_lock(lock, port, server.pid)
            time.sleep(0.1)
            if server.poll() is not None:
                raise OSError(f"it exited at once ({server.returncode})")
        print(f"TensorBoard (live, all experiments): {url('127.0.0.1', port)} starting (make tb-stop stops it;"
              f" its output: {LIVE_LOG})")
    except Exception as error:  # TensorBoard is a convenience: the run goes on without it
        print(f"warning: no live TensorBoard ({type(error).__name__}: {error}); see {LIVE_LOG}", file=sys.stderr)


def stop():
    """Stop the live server(s) of this project: SIGTERM (it removes its info file), then SIGKILL."""
    pids = {info.pid: info.port for info in live_servers()}
    if LIVE_LOCK.exists():
        with open(LIVE_LOCK) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a server that may not have written its info file yet
                words = lock.read().split()
                if len(words) == 2 and words[0].isdigit() and words[1].isdigit() and serves_live_tree(int(words[1])):
                    pids.setdefault(int(words[1]), int(words[0]))
    if not pids:
        print("no live TensorBoard is running for this project")
        return
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, port in pids.items():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"stopped the live TensorBoard (pid {pid}, port {port})")


def main():
    run_mode({"serve": serve, "stop": stop}, "settings come from the environment: TAGS, PORT, HOST")


if __name__ == "__main__":
    main()
