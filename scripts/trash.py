"""Clear away experiments without fear: `python scripts/trash.py rm|restore|empty`.

    make rm EXP="x/3 y"        move experiments (a bare tag: all its ids) to __result__/.trash/,
                               and their lines out of finished.txt
    make restore EXP="x/3 y"   bring them back exactly: files, links, finished.txt's lines
    make empty-trash [YES=1]   delete the trash for good, after listing it and asking

rm refuses, moving nothing: a running experiment; one named in a list of yours or a sweep's, by
tag/id or by its bare tag (it says which list); one that another experiment started from (its
init_from). A tag's folder left empty goes too. The git tag stays: git tag -d deletes it. Ids
are never given again: a new run of the tag takes the next id past the trash's, and past those
empty-trash deleted (__result__/.retired-ids.json). Input comes from the environment (EXP, YES).
"""
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path

from gitexp.files import write_json
from cli import UserError, env, run_mode
from lists import FINISHED, LISTS, list_entries, parse_word
from names import NUMBER
from store import RESULTS, RETIRED, TRASH, ids_of, live, lock_held

SWEEP_RECORDS = Path("__statistic__/sweeps")


def named(words, root):
    """The experiments EXP names under `root` (the results or the trash), as (tag, id), each once."""
    if not words:
        raise UserError("EXP is missing: name the experiments, e.g. EXP=\"x/3 y\" (a bare tag: all its ids)")
    found = []
    for word in words:
        tag, number = parse_word("EXP", word)
        existing = [n for n in ids_of(tag, root) if number is None or n == number]
        if not existing:
            raise UserError(f"EXP: there is no experiment {word} in {root}/ (make ls lists them)")
        found += [(tag, n) for n in existing]
    return list(dict.fromkeys(found))


def lists_naming(removing):
    """{list name: [the experiments of `removing` it names]}: by tag/id, or by a bare tag (which
    names every id of the tag: removing one changes that list's table too)."""
    needed = {}
    for path in sorted(LISTS.glob("*.txt")) if LISTS.is_dir() else []:
        if path.name == FINISHED.name:
            continue
        label = f"sweep {path.stem}'s list" if (SWEEP_RECORDS / f"{path.stem}.json").exists() else path.stem
        for tag, number in list_entries(path):
            named_here = [f"{t}/{n}" for t, n in removing if t == tag and number in (None, n)]
            if named_here:
                needed.setdefault(label, []).extend(named_here)
    return {label: list(dict.fromkeys(items)) for label, items in needed.items()}


def started_from(removing):
    """{tag/id being removed: [experiments whose init_from is it]} among those that stay."""
    starts = {}
    for path in RESULTS.glob("*/*/statistic.json"):
        if not NUMBER.fullmatch(path.parent.name) or (path.parent.parent.name, int(path.parent.name)) in removing:
            continue
        try:
            source = (json.loads(path.read_text()).get("init_from") or {}).get("experiment")
        except (OSError, ValueError):
            continue
        if source and tuple(source.rsplit("/", 1)) in {(t, str(n)) for t, n in removing}:
            starts.setdefault(source, []).append(f"{path.parent.parent.name}/{path.parent.name}")
    return starts


def edit_finished(change):
    """Rewrite finished.txt's lines with `change(lines)`, under the lock finishing runs append under."""
    FINISHED.parent.mkdir(parents=True, exist_ok=True)
    with open(FINISHED, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        lines = change(f.read().splitlines())
        f.seek(0)
        f.truncate()
        f.write("".join(f"{line}\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def do_rm():
    removing = named(env("EXP").split(), RESULTS)
    for tag, number in removing:
        if live(RESULTS / tag / str(number)):
            raise UserError(f"{tag}/{number} is running: stop it first (nothing was moved)")
        if (TRASH / tag / str(number)).exists():
            raise UserError(f"the trash already holds {tag}/{number}: make empty-trash, or make restore it first")
    needed = lists_naming(set(removing))
    if needed:
        which = "; ".join(f"{name} ({', '.join(items)})" for name, items in needed.items())
        raise UserError(f"named in your list(s) {which}: take those lines out of {LISTS}/<list>.txt first (nothing was moved)")
    starts = started_from(set(removing))
    if starts:
        source, users = next(iter(starts.items()))
        raise UserError(f"{source} is where {', '.join(users)} started from (init_from): "
                        "remove those first, or keep it (nothing was moved)")
    for tag, number in removing:
        def take_out(lines, name=f"{tag}/{number}"):
            place = lines.index(name) if name in lines else None
            write_json(TRASH / tag / f"{number}.json", {"finished_line": place, "moved": time.time_ns()})
            os.rename(RESULTS / tag / str(number), TRASH / tag / str(number))
            return [line for line in lines if line != name]
        edit_finished(take_out)
    tags = sorted({tag for tag, _ in removing})
    for tag in tags:
        remove_if_empty(RESULTS / tag)
    print(f"moved {len(removing)} experiment(s) to {TRASH}/: {' '.join(f'{t}/{n}' for t, n in removing)}")
    print(f"make restore EXP=\"{' '.join(f'{t}/{n}' for t, n in removing)}\" brings them back; "
          f"the git tag(s) {' '.join(tags)} stay (git tag -d TAG deletes one)")


def remove_if_empty(folder):
    """The tag's folder, where nothing but lock files no process holds is left in it."""
    entries = list(folder.iterdir())
    if any(not entry.name.endswith(".lock") or not entry.is_file() for entry in entries):
        return
    if any(lock_held(entry) for entry in entries):
        return
    for entry in entries:
        entry.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something appeared meanwhile (a run of the tag starting): it stays


def do_restore():
    restoring = named(env("EXP").split(), TRASH)
    for tag, number in restoring:
        if (RESULTS / tag / str(number)).exists():
            raise UserError(f"{RESULTS / tag / str(number)} exists again (a new run took id {number}): "
                            "nothing was restored")
    moved = {e: trash_record(*e) for e in restoring}
    places = {e: record.get("finished_line") for e, record in moved.items()}
    # the reverse of the order they went in, each back at its old line: finished.txt as it was
    for tag, number in sorted(restoring, key=lambda e: -moved[e].get("moved", 0)):
        def put_back(lines, tag=tag, number=number):
            (RESULTS / tag).mkdir(parents=True, exist_ok=True)
            os.rename(TRASH / tag / str(number), RESULTS / tag / str(number))
            (TRASH / tag / f"{number}.json").unlink(missing_ok=True)
            if not any((TRASH / tag).iterdir()):
                (TRASH / tag).rmdir()
            place = places[(tag, number)]
            return lines if place is None else lines[:place] + [f"{tag}/{number}"] + lines[place:]
        edit_finished(put_back)
    print(f"restored {' '.join(f'{t}/{n}' for t, n in restoring)}")


def trash_record(tag, number):
    try:
        return json.loads((TRASH / tag / f"{number}.json").read_text())
    except (OSError, ValueError):
        return {}


def do_empty():
    held = sorted((p.parent.name, int(p.name)) for p in TRASH.glob("*/*") if p.is_dir() and NUMBER.fullmatch(p.name)) \
        if TRASH.is_dir() else []
    if not held:
        print("the trash is empty")
        return
    print(f"the trash holds {len(held)} experiment(s): {' '.join(f'{t}/{n}' for t, n in held)}")
    if env("YES") not in ("", "0", "1"):
        raise UserError(f"YES={env('YES')!r} is not 1: YES=1 deletes without asking")
    if env("YES") != "1":
        if not sys.stdin.isatty():
            raise UserError("nothing deleted: no terminal to ask on; give YES=1 to delete them for good")
        answer = input(f"delete these {len(held)} for good? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing deleted")
            return
    retire(held)
    shutil.rmtree(TRASH)
    print(f"deleted {len(held)} experiment(s) for good")


def retire(deleted):
    """Keep the highest id of each tag deleted for good: a new run never takes one of them."""
    try:
        retired = json.loads(RETIRED.read_text())
    except (OSError, ValueError):
        retired = {}
    for tag, number in deleted:
        retired[tag] = max(number, retired.get(tag, -1))
    write_json(RETIRED, dict(sorted(retired.items())))


def main():
    run_mode({"rm": do_rm, "restore": do_restore, "empty": do_empty})


if __name__ == "__main__":
    main()
