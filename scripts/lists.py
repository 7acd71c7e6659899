"""Experiment lists: `python scripts/lists.py record|check`.

A list is __statistic__/exper-list/<LIST>.txt, one experiment a line:
    baseline/0     one experiment, __result__/baseline/0
    baseline       every id of tag baseline
Blank lines and lines starting with # are ignored. `make run` keeps finished.txt; any other
list is yours: `make record` appends to one, or write it by hand.

    record  (make record EXP="x/0 y" LIST=l)  append EXP (default: the last finished experiment)
    check   (make, when LIST is refused)     say what is wrong with LIST, in one line

Input comes from the environment (LIST, EXP), never from a shell's text. Every script reads
lists through this module, so each reports a bad line in the same words. Standard library only.
"""
import os
from pathlib import Path

from gitexp.files import atomic_write
from cache import MISSING, indices_of, key_slice, stat_all, stat_or_none
from cli import UserError, env, run_mode
from names import NAME, NAME_RULE, NUMBER, parse_run
from store import RESULTS, expand, ids_of, read_statistic, statistic_path

LISTS = Path("__statistic__/exper-list")
FINISHED = LISTS / "finished.txt"


def list_name(value=None):
    """LIST (default record), checked: it becomes part of a path and of make targets."""
    name = (env("LIST") if value is None else value) or "record"
    if not NAME.fullmatch(name):
        raise UserError(f"LIST={name!r} is not a list name: {NAME_RULE} "
                        f"(the list is {LISTS}/<LIST>.txt)")
    return name


def list_path(name, must_exist=True):
    path = LISTS / f"{name}.txt"
    if must_exist and not path.is_file():
        known = sorted(p.stem for p in LISTS.glob("*.txt")) if LISTS.is_dir() else []
        raise UserError(f"unknown list {name}: there is no {path} (lists: {', '.join(known) or 'none yet'}; "
                        "make record adds experiments to one)")
    return path


def parse_word(variable, word):
    """(tag, id or None) of one word a user gave (EXP, A, B); a UserError naming `variable`
    where it is not tag/id or tag (a comment included: it names nothing)."""
    try:
        parsed = parse_run(word)
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
            parsed = parse_run(line)
        except ValueError:
            continue
        if parsed is not None:
            yield parsed


def read_list(name):
    """The experiments list `name` names, in order, each once. Every line must name one."""
    path = list_path(name)
    experiments, _, _, problems = expand_list(path, path.read_text(errors="replace"))
    if problems:
        raise UserError(problems[0][1])
    return experiments


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
            parsed = parse_run(line)
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
    found = present_of(path, names, problems, watch_nearest)
    if found is None:
        return None
    present, stats = found
    if not present and not problems:
        problems.append((0, f"{path} names no experiment: add some with make record EXP=\"tag/id\" LIST={path.stem}"))
    return present, stats, watch, sorted(problems)[:1]


def present_of(path, names, problems, watch_nearest):
    """(the names whose statistic.json is there, their stat keys), a problem added for each
    missing one a line named by its id; None where a known name (of a list that grew) is gone."""
    names_list = list(names)
    stats = stat_all(names_list)
    missing = indices_of(stats, MISSING)
    for i in missing:
        name = names_list[i]
        if names[name] == "known":
            return None
        if names[name] is not None:
            number, line = names[name]
            tag, _, id_number = name.partition("/")
            problems.append((number, f"{path} line {number}: {line.strip()} names no experiment "
                                     f"(no {statistic_path(tag, id_number)}; make ls lists them)"))
            watch_nearest(RESULTS / tag / id_number)
    if not missing:
        return names_list, stats
    gone = set(missing)
    return ([name for i, name in enumerate(names_list) if i not in gone],
            b"".join(stats[key_slice(i)] for i in range(len(names_list)) if i not in gone))


# ---- commands -----------------------------------------------------------------------------------

def do_record():
    name = list_name()
    if name == FINISHED.stem:
        raise UserError(f"LIST={name} is kept by make run: record into another list, e.g. LIST=record")
    words = env("EXP").split()
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
            parsed = parse_run(line)
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


def do_check():
    """Called only when make refused LIST, so something is wrong: say what."""
    name = list_name()
    list_path(name)
    raise UserError(f"list {name} appeared while make was starting: run make again")


if __name__ == "__main__":
    run_mode({"record": do_record, "check": do_check}, status=1)
