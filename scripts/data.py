"""Prepared data, listed and removed: `python scripts/data.py ls|rm` (make data-ls, make data-rm).

    make data-ls          every prepared folder __data__/<key>/: its size on disk, when it was
                          prepared, what made it (data.py and the code it imports, the config
                          values prepare() read, the raw files they name), the recorded runs
                          whose data it is (the trash's too), and the one the working tree's
                          code/config would use now
    make data-rm KEY=k    remove the folder of key k (or of the one key k begins, 6 characters or
                          more) that no recorded run names; refused, changing nothing, where one does

The folders and their records are gitexp.datastore's. Which one the working tree would use is
asked of it in a process of the loop's (`python -m gitexp.datastore existing`, which imports
your config and data, torch with them), preparing nothing: this launcher stays on the standard
library. KEY comes from the environment.
"""
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

from cli import UserError, env, run_mode
from gitexp.datastore import LOCK, ROOT, manifests
from store import RESULTS, TRASH, ids_of

SHOWN = 8  # runs named in full on a line; the rest counted


def recorded_runs():
    """(tag/id, in the trash, the statistic.json's text) of every recorded run."""
    for root in (RESULTS, TRASH):
        tags = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")) \
            if root.is_dir() else []
        for tag in tags:
            for number in ids_of(tag, root):
                try:
                    text = (root / tag / str(number) / "statistic.json").read_text(errors="replace")
                except OSError:
                    continue
                yield f"{tag}/{number}", root == TRASH, text


def runs_naming(keys):
    """{key: [(tag/id, in the trash)]}: the runs whose data.key is one of `keys`. A record that is
    not valid JSON names each key its text holds (better kept than a run's data lost)."""
    found = {key: [] for key in keys}
    for name, trashed, text in recorded_runs():
        try:
            data = json.loads(text).get("data")
            named = [data.get("key")] if isinstance(data, dict) else []
        except (ValueError, AttributeError):
            named = [key for key in keys if key in text]
        for key in named:
            if key in found:
                found[key].append((name, trashed))
    return found


def runs_text(runs):
    words = [f"{name} (in the trash)" if trashed else name for name, trashed in runs]
    return " ".join(words[:SHOWN]) + (f" ... ({len(words)} in all)" if len(words) > SHOWN else "")


def size_on_disk(folder):
    total = 0
    for where, _, files in os.walk(folder):
        total += sum(os.lstat(os.path.join(where, name)).st_blocks * 512 for name in files)
    return total


def human(size):
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def made_from(record):
    """What made a folder, briefly: the code files, the config values, the raw ones marked."""
    raw = record.get("raw") or {}
    values = [f"{name}={value!r}" + (f" (raw files {raw[name][:8]})" if name in raw else "")
              for name, value in (record.get("config") or {}).items()]
    return "; ".join([", ".join(record.get("code") or {}) or "no code", *values])


def used_now():
    """(the key the working tree's code/config would use now or None, a line saying so), asked
    of the loop's side: it imports config.py and data.py."""
    answer = subprocess.run([sys.executable, "-m", "gitexp.datastore", "existing"], capture_output=True, text=True)
    lines = answer.stdout.strip().splitlines()
    if answer.returncode != 0 or not lines:
        last = (answer.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"note: which one the working tree's code/config would use is unknown: {last}"
    try:
        found = json.loads(lines[-1])
    except ValueError:
        return None, f"note: which one the working tree's code/config would use is unknown: {lines[-1]}"
    if not found["prepare"]:
        return None, "the working tree's data.py has no prepare(): its data is your own, none of these"
    if found["key"] is None:
        return None, "the working tree's code/config would prepare new data (make data prepares it)"
    return found["key"], f"* the working tree's code/config uses {found['key']} now"


def do_ls():
    folders = manifests()
    now, last_line = used_now()
    if not folders:
        print(f"no prepared data in {ROOT}/")
        print(last_line)
        return
    runs = runs_naming([folder.name for folder, _ in folders])
    print(f"{'':2}{'key':16}  {'size':>8}  {'prepared':16}  made from")
    for folder, record in folders:
        mark = "* " if folder.name == now else "  "
        when = str(record.get("prepared", "?"))[:16].replace("T", " ")
        print(f"{mark}{folder.name:16}  {human(size_on_disk(folder)):>8}  {when:16}  {made_from(record)}")
        used = runs[folder.name]
        print(f"{'':20}runs ({len(used)}): {runs_text(used)}" if used else
              f"{'':20}no recorded run (make data-rm KEY={folder.name} removes it)")
    print(last_line)


def do_rm():
    key = env("KEY")
    if not key:
        raise UserError("KEY is missing: make data-rm KEY=<key> (make data-ls lists the prepared data)")
    if not re.fullmatch(r"[0-9a-f]{6,64}", key):
        raise UserError(f"KEY={key!r} is not a data key (hex digits, 6 or more of one): make data-ls lists them")
    found = [folder for folder, _ in manifests() if folder.name.startswith(key)]
    if not found:
        raise UserError(f"KEY={key}: there is no prepared data of that key in {ROOT}/ (make data-ls lists them)")
    if len(found) > 1:
        raise UserError(f"KEY={key} begins several keys ({', '.join(f.name for f in found)}): give more of it")
    folder = found[0]
    used = runs_naming([folder.name])[folder.name]
    if used:
        raise UserError(f"{folder} is the data of {len(used)} recorded run(s): {runs_text(used)}: make rm them "
                        "(and make empty-trash) first, or keep it (nothing was removed)")
    size = size_on_disk(folder)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # not while a run prepares data; out of sight at once
        going = ROOT / f".removing-{folder.name}"
        shutil.rmtree(going, ignore_errors=True)  # left by an interrupted data-rm
        os.rename(folder, going)
    shutil.rmtree(going)
    print(f"removed {folder} ({human(size)})")


if __name__ == "__main__":
    run_mode({"ls": do_ls, "rm": do_rm}, "KEY comes from the environment")
