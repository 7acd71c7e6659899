"""Where an experiment's files are, and the names their paths are made of: known here once, for
both sides (the launcher's scripts/store.py and names.py; the loop's record.py, checkpoint.py
and warmstart.py). Standard library only.

    __result__/<tag>/<id>/              one experiment: TAG and ID below
        statistic.json                  its record (gitexp/schema.py: every field)
        log                             main.py's output
        code/                           the tag's code, as it ran
        checkpoint/epoch_<n>.pth        after epoch n; step_<n>_<k>.pth: k steps into epoch n+1
        checkpoint/epoch_last.pth, epoch_best.pth     links to one of them
        tensorboard/                    its events
        media/<set>_<name>/<step>.png   evaluate's media.Image at that step (.txt: media.Text)
        files/                          the task's own files (gitexp.run_dir())
    __statistic__/exper-list/finished.txt           every finished experiment, tag/id a line

A tag is a git tag and a folder: letters, digits, '.', '_' and '-', starting with a letter or
digit, at most 100 characters (git's own exceptions, a '..', a final '.' or '.lock', are the
launcher's names.is_tag). A list's name follows the same pattern.
"""
import re
from pathlib import Path

RESULTS = Path("__result__")
FINISHED_LIST = Path("__statistic__/exper-list/finished.txt")
STATISTIC = "statistic.json"
MEDIA = "media"
OWN_FILES = "files"

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ID = re.compile(r"0|[1-9][0-9]{0,8}")  # an id (and any count a user gives)
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pth")
STEP_FILE = re.compile(r"step_(\d+)_(\d+)\.pth")  # inside an epoch: epochs done, steps into the next
# config.py's init_from: "tag/id", "tag/id@best", "tag/id@last" or "tag/id@<epoch>"
SOURCE = re.compile(rf"({TAG.pattern})/({ID.pattern})(?:@(best|last|[1-9][0-9]{{0,8}}))?")


def experiment_folder(tag, number):
    return RESULTS / tag / str(number)


def statistic_path(tag, number):
    return f"{RESULTS}/{tag}/{number}/{STATISTIC}"  # a str: pathlib costs 0.3 s for 10,000


def checkpoint_position(name):
    """(epochs done, steps into the next) that a checkpoint file's name says; None for others."""
    if m := EPOCH_FILE.fullmatch(name):
        return int(m[1]), 0
    if m := STEP_FILE.fullmatch(name):
        return int(m[1]), int(m[2])
    return None
