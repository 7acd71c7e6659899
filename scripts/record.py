"""Experiment lists: `python scripts/record.py record|scan|check`.

A list is __statistic__/exper-list/<LIST>.txt, one experiment a line:
    baseline/0     one experiment, __result__/baseline/0
    baseline       every id of tag baseline
Blank lines and lines starting with # are ignored. `make run` keeps finished.txt; any other
list is yours: `make record` appends to one, or write it by hand.

    record  (make record EXP="x/0 y" LIST=l)  append EXP (default: the last finished experiment)
    scan    (make, before title/table)       write __statistic__/.deps/<LIST>.state: what
            the list names and the stat of each statistic.json, only when that changed
    check   (make, when LIST is refused)     say what is wrong with LIST, in one line

Input comes from the environment (LIST, EXP, STATISTIC_STEM), never from a shell's text.
title.py and table.py read lists and statistic.json files through this module, so every
script reports a bad line or a corrupt file in the same words. Standard library only.
"""
import fcntl
import hashlib
import json
import marshal
import os
import re
import struct
import sys
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path("__result__")
TRASH = RESULTS / ".trash"
RETIRED = RESULTS / ".retired-ids.json"  # {tag: the highest id the trash deleted for good}
LISTS = Path("__statistic__/exper-list")
DEPS = Path("__statistic__/.deps")
FINISHED = LISTS / "finished.txt"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a list name; also a tag (experiment.py's pattern)
NUMBER = re.compile(r"0|[1-9][0-9]{0,8}")
STATE_VERSION = 3
STAT = struct.Struct("4q")  # a stat key: mtime_ns, ctime_ns, size, inode, as 32 bytes
RACY = STAT.pack(-1, -1, -1, -1)  # stands for the stat key of a file too recently changed to trust it
MISSING = bytes(STAT.size)
RACY_NS = 2 * 10**9  # a timestamp's tick is up to 2 s on some file systems


class UserError(Exception):
    """A mistake the user can fix; reported as one line, never as a traceback."""


def run(main, status=1):
    """Exit with main()'s return value; a UserError becomes one `error:` line on stderr and
    exit `status` instead."""
    try:
        sys.exit(main())
    except UserError as problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(status)
    except BrokenPipeError:  # `make table | head`
        sys.stderr.close()
        sys.exit(1)


# ---- a run's status: one truth for ls, continue, rerun, rm and sweep -------------------------------

def hold(path):
    """Hold an exclusive flock on `path` until the handle is closed; None if another has it."""
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def live(folder):
    """Whether a process runs the experiment in `folder` now: its launcher holds the folder's
    .lock for as long as it lives (make run, continue, rerun, a sweep's run, a Slurm job), and
    the kernel lets go of it when that process dies, SIGKILL included."""
    return lock_held(os.path.join(folder, ".lock"))


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


def status_of(folder, recorded):
    """A run's status: "running" while a process holds it, whatever statistic.json says yet (a
    continue that is starting); "stopped" where it says running but no process holds it (killed,
    SIGKILL or a lost node); else what statistic.json says (finished, stopped, failed)."""
    if recorded == "finished":
        return recorded
    if live(folder):
        return "running"
    return "stopped" if recorded == "running" else recorded


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


def run_mode(modes, settings="settings come from the environment"):
    """A script's one command-line word: run modes[word] through run() (a UserError: one line,
    exit 2); any other command line is answered with the usage."""
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit(f"usage: python {sys.argv[0]} {'|'.join(modes)} ({settings})")
    run(modes[sys.argv[1]], status=2)


def list_name(value=None):
    """LIST (default record), checked: it becomes part of a path and of make targets."""
    name = os.environ.get("LIST", "") if value is None else value
    name = name or "record"
    if len(name) > 100 or not NAME.fullmatch(name):
        raise UserError(f"LIST={name!r} is not a list name: use letters, digits, '.', '_' and '-', "
                        f"starting with a letter or digit (the list is {LISTS}/<LIST>.txt)")
    return name


def list_path(name, must_exist=True):
    path = LISTS / f"{name}.txt"
    if must_exist and not path.is_file():
        known = sorted(p.stem for p in LISTS.glob("*.txt")) if LISTS.is_dir() else []
        raise UserError(f"unknown list {name}: there is no {path} (lists: {', '.join(known) or 'none yet'}; "
                        "make record adds experiments to one)")
    return path


def statistic_path(tag, number):
    return f"{RESULTS}/{tag}/{number}/statistic.json"  # a str: pathlib costs 0.3 s for 10,000


def ids_of(tag):
    """The ids of `tag` that have a statistic.json, in numeric order."""
    folder = f"{RESULTS}/{tag}"
    if not os.path.isdir(folder):
        return []
    numbers = sorted(int(p) for p in os.listdir(folder) if NUMBER.fullmatch(p))
    return [n for n in numbers if os.path.isfile(statistic_path(tag, n))]


def parse_line(text):
    """(tag, id or None) for one list line or EXP word; None for a blank or comment line."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    tag, slash, number = text.partition("/")
    if NAME.fullmatch(tag) and (not slash or NUMBER.fullmatch(number)):
        return tag, int(number) if slash else None
    raise ValueError(f"{text!r} is not tag/id or tag")


def parse_word(variable, word):
    """(tag, id or None) of one word a user gave (EXP, A, B); a UserError naming `variable`
    where it is not tag/id or tag (a comment included: it names nothing)."""
    try:
        parsed = parse_line(word)
    except ValueError as problem:
        raise UserError(f"{variable}: {problem}")
    if parsed is None:
        raise UserError(f"{variable}: {word!r} is not tag/id or tag")
    return parsed


def list_entries(path):
    """(tag, id or None) of each line of a list file that names experiments; bad lines are
    skipped (title.py is the one that reports them)."""
    for line in path.read_text(errors="replace").splitlines():
        try:
            parsed = parse_line(line)
        except ValueError:
            continue
        if parsed is not None:
            yield parsed


def expand(tag, number):
    """The experiments one line names, as tag/id strings; [] where none exists."""
    if number is None:
        return [f"{tag}/{n}" for n in ids_of(tag)]
    return [f"{tag}/{number}"] if os.path.isfile(statistic_path(tag, number)) else []


def read_list(name):
    """The experiments list `name` names, in order, each once. Every line must name one."""
    path = list_path(name)
    experiments, _, _, problems = expand_list(path, path.read_text(errors="replace"))
    if problems:
        raise UserError(problems[0][1])
    return experiments


def read_statistic(name):
    """The statistic.json of experiment `name` (tag/id), checked to be a JSON object."""
    return load_statistic(name)[0]


def load_statistic(name):
    """read_statistic's object, and the os.stat_result of the file it was read from, taken
    before reading (a change while it is read changes the file's ctime after this stat)."""
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


def in_parallel(jobs):
    """Call each of `jobs` (functions of no argument) at the same time: the first in this
    process, each other one in a forked process that sends its result (marshal: plain values
    only) through a pipe. Their results, in order; the first UserError in job order is raised,
    as a plain loop would meet it. Fork before importing anything that starts threads."""
    children = []
    for job in jobs[1:]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its result (or its error) through the pipe, then exit at once
            try:
                os.close(read_end)
                try:
                    payload = ("ok", job())
                except UserError as problem:
                    payload = ("error", str(problem))
                except BaseException as error:
                    payload = ("crash", f"{type(error).__name__}: {error}")
                with os.fdopen(write_end, "wb") as f:
                    f.write(marshal.dumps(payload))
            finally:
                os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    results = []
    try:
        results.append(("ok", jobs[0]()))
    except UserError as problem:
        results.append(("error", str(problem)))
    finally:  # read every pipe before waiting: a child blocks until its pipe is read
        for pid, read_end in children:
            with os.fdopen(read_end, "rb") as f:
                try:
                    results.append(marshal.loads(f.read()))  # marshal.load(f) reads item by item
                except (EOFError, ValueError):
                    results.append(("crash", "a reader process died"))
            os.waitpid(pid, 0)
    values = []
    for kind, value in results:
        if kind == "error":
            raise UserError(value)
        if kind == "crash":
            raise RuntimeError(f"reading the statistic.json files failed: {value}")
        values.append(value)
    return values


def in_halves(items, work, at_least=20000):
    """work(items), by two processes where there are at least `at_least` items; the halves'
    results (lists, bytes) joined with +."""
    if len(items) < at_least:
        return work(items)
    half = len(items) // 2
    first, second = in_parallel([lambda: work(items[:half]), lambda: work(items[half:])])
    return first + second


# what reading a derived file (__statistic__/.deps/) raises where it is missing, damaged, of
# another version or of another shape: each reader then does without it (one cold read)
DAMAGED = (OSError, EOFError, ValueError, TypeError, LookupError)


def read_cache(path, version):
    """The dict marshal.dumps wrote to `path` with {"version": version}; ValueError for another
    version. (marshal.load(f) would read it item by item: 10 times slower.)"""
    with open(path, "rb") as f:
        cache = marshal.loads(f.read())
    if cache["version"] != version:
        raise ValueError(f"{path} has version {cache['version']}, not {version}")
    return cache


@contextmanager
def replacing(path):
    """A temp file beside `path`, renamed over `path` where the block ends without an error
    (else removed): never half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path, content):
    """Write `content` (text or bytes) to `path` through replacing()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


# ---- commands -----------------------------------------------------------------------------------

def do_record():
    name = list_name()
    if name == FINISHED.stem:
        raise UserError(f"LIST={name} is kept by make run: record into another list, e.g. LIST=record")
    words = os.environ.get("EXP", "").split()
    if not words:
        last = FINISHED.read_text().split() if FINISHED.is_file() else []
        if not last:
            raise UserError(f"no finished experiment yet ({FINISHED} is empty): give EXP=\"tag/id\"")
        words = last[-1:]
    adding = []
    for word in words:
        parsed = parse_word("EXP", word)
        if not [read_statistic(e) for e in expand(*parsed)]:  # each must be readable, not only exist
            raise UserError(f"EXP: there is no experiment {word} (make ls lists them)")
        adding.append(word)
    path = list_path(name, must_exist=False)
    lines = path.read_text().splitlines() if path.is_file() else []
    present = set()
    for line in lines:
        try:
            parsed = parse_line(line)
        except ValueError:
            continue  # a bad line is title's and table's to report
        if parsed:
            present.add(line.strip())
            if parsed[1] is None:  # a bare tag covers its ids, today's and tomorrow's
                present.update(f"{parsed[0]}/{n}" for n in ids_of(parsed[0]))
    new = [w for w in dict.fromkeys(adding) if w not in present]
    for word in adding:
        if word not in new:
            print(f"{word} is already in {path}")
    if new:
        atomic_write(path, "".join(f"{line}\n" for line in lines + new))
        print(f"recorded {' '.join(new)} in {path}")


def stat_key(stat):
    """What says a file is unchanged (any write changes its ctime, which no one can set back),
    as bytes: a list's are kept as one string of them."""
    return STAT.pack(stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)


def settled_key(stat):
    """stat_key, or RACY for a file changed less than RACY_NS ago: a second change within its
    timestamp's tick could leave its stat as it is."""
    return stat_key(stat) if stat.st_ctime_ns < time.time_ns() - RACY_NS else RACY


def stat_or_none(path):
    try:
        return stat_key(os.stat(path))
    except OSError:
        return None


def stat_all(names):
    """The stat keys of the experiments' statistic.json files, one string (MISSING for a missing
    one), in two processes where there are many: a stat costs some 2 us, mostly the kernel's."""
    def stat_part(part):
        keys = []
        for name in part:
            try:
                keys.append(stat_key(os.stat(f"{RESULTS}/{name}/statistic.json")))
            except OSError:
                keys.append(MISSING)
        return b"".join(keys)
    return in_halves(names, stat_part)


def keys_of(stats):
    """The stat keys in a string of them, one a file."""
    return [stats[i:i + STAT.size] for i in range(0, len(stats), STAT.size)]


def expand_list(path, text, grown=None):
    """(experiments, their stat keys, folders to watch, problems) of a list file whose text is
    `text`; None where `grown`, the state of the list before lines were appended to it, names
    an experiment that is gone. Problems are (line number, read_list's message), for title.py
    to report the first; the folders are those whose change could change what the list names
    (a bare tag's folder, an id folder without its statistic.json yet, the nearest existing
    folder of a missing experiment). With `grown`, only the appended lines are read."""
    names, watch, problems, first = {}, {}, [], 1
    if grown:
        names = dict.fromkeys(grown["names"], "known")
        watch, problems = dict(grown["watch"]), list(grown["problems"])
        first = grown["text"].count("\n") + 1
        text = text[len(grown["text"]):]

    def watch_nearest(folder):
        while not folder.is_dir() and folder != Path("."):
            folder = folder.parent
        watch[str(folder)] = stat_or_none(folder)

    for number, line in enumerate(text.splitlines(), first):
        try:
            parsed = parse_line(line)
        except ValueError as error:
            problems.append((number, f"{path} line {number}: {error}"))
            continue
        if parsed is None:
            continue
        tag, id_number = parsed
        if id_number is not None:  # whether it exists, the stat below says
            names.setdefault(f"{tag}/{id_number}", (number, line))
            continue
        found = ids_of(tag)
        if not found:
            problems.append((number, f"{path} line {number}: {line.strip()} names no experiment (no "
                                     f"{statistic_path(tag, '<id>')}; make ls lists them)"))
        watch_nearest(RESULTS / tag)
        if (RESULTS / tag).is_dir():
            for entry in os.scandir(RESULTS / tag):
                if NUMBER.fullmatch(entry.name) and not os.path.isfile(statistic_path(tag, entry.name)):
                    watch[entry.path] = stat_or_none(entry.path)
        for n in found:
            names.setdefault(f"{tag}/{n}", None)
    names_list = list(names)
    keys = keys_of(stat_all(names_list))
    for name, key in zip(names_list, keys):
        if key == MISSING and names[name] == "known":
            return None
        if key == MISSING and names[name] is not None:
            number, line = names[name]
            tag, _, id_number = name.partition("/")
            problems.append((number, f"{path} line {number}: {line.strip()} names no experiment "
                                     f"(no {statistic_path(tag, id_number)}; make ls lists them)"))
            watch_nearest(RESULTS / tag / id_number)
    present = [(name, key) for name, key in zip(names_list, keys) if key != MISSING]
    if not present and not problems:
        problems.append((0, f"{path} names no experiment: add some with make record EXP=\"tag/id\" LIST={path.stem}"))
    return [name for name, _ in present], b"".join(key for _, key in present), watch, sorted(problems)[:1]


def state_path(name):
    return DEPS / f"{name}.state"


def load_state(name):
    """The state scan() last wrote for list `name`, or None where there is none it can trust."""
    try:
        state = read_cache(state_path(name), STATE_VERSION)
        if len(state["names"]) * STAT.size == len(state["stats"]):
            return state
    except DAMAGED:
        pass
    return None


def content_digest(name):
    try:
        with open(f"{RESULTS}/{name}/statistic.json", "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).digest()
    except OSError:
        return b""


def scan(name):
    """The state of list `name`: what it names, the stat key of each statistic.json, and the
    first problem of its lines. Written to state_path(name) with a new mtime only when that
    changed, so that the file's mtime is when the list's experiments last changed (make's
    prerequisite of the title and table); what else it keeps to be fast (the list's text and
    stat, the folders watched) is written with the mtime it had.
    A file changed less than RACY_NS ago is racy, as git calls it: a second change within its
    timestamp's tick would leave its stat as it is, so its content's digest is kept too, and
    the next scan compares that. Racy folders are kept with no stat: looked at again."""
    path = list_path(name)
    old = load_state(name)
    listed = stat_or_none(path)
    watched = old and all(s is not None and stat_or_none(f) == s for f, s in old["watch"].items())
    expanded = None
    if watched and old["list"] == listed:
        text, names, watch, problems = old["text"], old["names"], old["watch"], old["problems"]
        stats = stat_all(names)
        if MISSING not in keys_of(stats):
            expanded = names, stats, watch, problems
    else:
        text = path.read_text(errors="replace")
        if watched and old["text"].endswith("\n") and text.startswith(old["text"]):  # lines appended
            expanded = expand_list(path, text, grown=old)
    # a file gone since, or the list changed: what it names is read again
    names, stats, watch, problems = expanded or expand_list(path, text)
    settled = time.time_ns() - RACY_NS
    racy = {names[i]: content_digest(names[i])
            for i, ctime in enumerate(memoryview(stats).cast("q")[1::4]) if ctime >= settled}
    watch = {folder: key if key is None or STAT.unpack(key)[1] < settled else None for folder, key in watch.items()}
    state = {"version": STATE_VERSION, "list": listed, "text": text, "watch": watch, "names": names,
             "stats": stats, "problems": problems, "racy": racy}
    meaning = ("names", "stats", "problems")
    if old is None or any(state[k] != old[k] for k in meaning) or \
            any((racy[n] if n in racy else content_digest(n)) != digest for n, digest in old["racy"].items()):
        atomic_write(state_path(name), marshal.dumps(state))
    elif state != old:  # only what makes it fast: the title and table are as good as they were
        before = os.stat(state_path(name))
        atomic_write(state_path(name), marshal.dumps(state))
        os.utime(state_path(name), ns=(before.st_atime_ns, before.st_mtime_ns))
    return state


def list_state(name):
    """(experiments, their stat keys) of list `name` as scan() last found them (scanning now
    where there is no state); a UserError where a line is bad or names nothing."""
    state = load_state(name) or scan(name)
    if state["problems"]:
        raise UserError(state["problems"][0][1])
    racy = state["racy"]
    return state["names"], [RACY if name in racy else key for name, key in zip(state["names"], keys_of(state["stats"]))]


def do_scan():
    scan(list_name(os.environ.get("STATISTIC_STEM", "")))


def do_check():
    """Called only when make refused LIST, so something is wrong: say what."""
    name = list_name()
    list_path(name)
    raise UserError(f"list {name} appeared while make was starting: run make again")


def main():
    commands = {"record": do_record, "scan": do_scan, "check": do_check}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit("usage: python scripts/record.py record|scan|check (settings come from the environment)")
    run(commands[sys.argv[1]])


if __name__ == "__main__":
    main()
