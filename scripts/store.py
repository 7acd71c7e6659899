"""The result store: __result__/<tag>/<id>/ and its statistic.json, known here alone on the
launcher's side. Ids, the trash's and retired ids, a run's status (one truth for ls,
continue, rerun, rm and sweep), reading and writing statistic.json. Standard library only.
"""
import fcntl
import json
import os
from pathlib import Path

from gitexp.files import write_json
from cli import UserError
from gitexp import layout
from gitexp.layout import RESULTS, statistic_path
from names import NUMBER

TRASH = RESULTS / ".trash"
RETIRED = RESULTS / ".retired-ids.json"  # {tag: the highest id the trash deleted for good}


def ids_of(tag, root=RESULTS):
    """The ids of `tag` under `root` (the results, or the trash) that have a statistic.json,
    in numeric order."""
    folder = f"{root}/{tag}"
    if not os.path.isdir(folder):
        return []
    numbers = sorted(int(p) for p in os.listdir(folder) if NUMBER.fullmatch(p))
    return [n for n in numbers if os.path.isfile(f"{folder}/{n}/statistic.json")]


def expand(tag, number):
    """The experiments "tag" (every id) or "tag/id" names, as tag/id strings; [] where none exists."""
    if number is None:
        return [f"{tag}/{n}" for n in ids_of(tag)]
    return [f"{tag}/{number}"] if os.path.isfile(statistic_path(tag, number)) else []


def used_ids(tag):
    """Every id tag `tag` has ever given: those in the results, those in the trash, and the
    highest the trash deleted for good. An id is never given twice."""
    ids = [int(p) for root in (RESULTS, TRASH) if os.path.isdir(f"{root}/{tag}")
           for p in os.listdir(f"{root}/{tag}") if NUMBER.fullmatch(p)]
    try:
        retired = json.loads(RETIRED.read_text()).get(tag)
    except (OSError, ValueError, AttributeError):
        retired = None
    return ids + ([retired] if isinstance(retired, int) else [])


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


def existing_experiment(tag, number):
    folder = layout.experiment_folder(tag, number)
    if not (folder / "statistic.json").exists():
        raise UserError(f"there is no experiment {tag}/{number} (make ls TAG={tag} shows its ids)")
    return folder


# ---- a run's status -----------------------------------------------------------------------------

def hold(path):
    """Hold an exclusive flock on `path` until the handle is closed; None if another has it."""
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def lock_held(path):
    """Whether a process holds the flock on `path` (a missing file: no)."""
    try:
        probe = open(path, "r")
    except (FileNotFoundError, NotADirectoryError):
        return False
    with probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def live(folder):
    """Whether a process runs the experiment in `folder` now: its launcher holds the folder's
    .lock for as long as it lives (make run, continue, rerun, a sweep's run, a Slurm job), and
    the kernel lets go of it when that process dies, SIGKILL included."""
    return lock_held(os.path.join(folder, ".lock"))


def status_of(folder, recorded):
    """A run's status: "running" while a process holds it, whatever statistic.json says yet (a
    continue that is starting); "stopped" where it says running but no process holds it (killed,
    SIGKILL or a lost node); else what statistic.json says (finished, stopped, failed)."""
    if recorded == "finished":
        return recorded
    if live(folder):
        return "running"
    return "stopped" if recorded == "running" else recorded


# ---- statistic.json -----------------------------------------------------------------------------

def load_statistic(name):
    """The statistic.json of experiment `name` (tag/id), checked to be a JSON object, and the
    os.stat_result of the file it was read from, taken before reading (a change while it is
    read changes the file's ctime after this stat)."""
    path = f"{RESULTS}/{name}/statistic.json"
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            statistic = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: experiment {name} was removed (make ls lists them)")
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}): "
                        "restore it, or take the experiment off the list")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error.reason}): restore it, or take the experiment off the list")
    except OSError as error:  # a folder in its place, no permission to read it, ...
        raise UserError(f"{path} cannot be read ({error.strerror}): fix it, or take the experiment off the list")
    if not isinstance(statistic, dict):
        raise UserError(f"{path} is not a JSON object: restore it, or take the experiment off the list")
    return statistic, stat


def read_statistic(where):
    """The statistic.json of an experiment, named tag/id or given as its folder."""
    name = os.path.relpath(where, RESULTS) if Path(where).is_relative_to(RESULTS) else str(where)
    return load_statistic(name)[0]


def write_statistic(folder, statistic):
    write_json(Path(folder) / "statistic.json", statistic)


def runs_of_tag(tag):
    """[(id, statistic)] of every experiment of `tag`, in id order."""
    return [(n, load_statistic(f"{tag}/{n}")[0]) for n in ids_of(tag)]


# ---- a sweep's runs -----------------------------------------------------------------------------

def sweep_runs(tag, name, k):
    """The experiments of `tag` that are run k of sweep `name`: [(id, statistic)]."""
    return [(number, s) for number, s in runs_of_tag(tag) if s.get("sweep") == name and s.get("sweep_run") == k]


def sweep_step(tag, name, k):
    """What run k of sweep `name` at point `tag` needs: ("done", id), ("continue", id) for a
    stopped run, or ("new", None)."""
    found = sweep_runs(tag, name, k)
    for number, statistic in found:
        if statistic.get("status") == "finished":
            return "done", number
    for number, statistic in reversed(found):
        if status_of(RESULTS / tag / str(number), statistic.get("status")) == "stopped":
            return "continue", number
    return "new", None


def claim_sweep_run(tag, name, k):
    """Hold run k of sweep `name` at point `tag` for as long as it runs (the lock file
    __result__/<tag>/.sweep-<name>-<k>.lock); None where another sweep holds it."""
    (RESULTS / tag).mkdir(parents=True, exist_ok=True)
    return hold(RESULTS / tag / f".sweep-{name}-{k}.lock")
