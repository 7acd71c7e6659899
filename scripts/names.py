"""Every name a user gives or the launcher makes, and its pattern, in one place: a tag (also a
list's name), an id, a run (tag or tag/id), a sweep's name. Standard library only.

A tag's and an id's pattern are code/gitexp/layout.py's, which the loop shares (a warm start's
source names one): a tag is a git tag and a folder __result__/<tag>/, letters, digits, '.',
'_' and '-', starting with a letter or digit, at most 100 characters; here also none of git's
exceptions (a '..', a final '.' or '.lock').
"""
import re

from cli import UserError
from gitexp.layout import ID as NUMBER, TAG as NAME

SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
GPU_LIST = re.compile(r"[0-9]{1,3}(,[0-9]{1,3})*")  # GPUS=0,1
NAME_RULE = "use letters, digits, '.', '_' and '-', starting with a letter or digit"


def is_tag(text):
    """Whether `text` can be a tag: NAME, and none of git's exceptions."""
    return bool(NAME.fullmatch(text)) and ".." not in text and not text.endswith((".", ".lock"))


def parse_run(text):
    """(tag, id or None) of "tag/id" or "tag"; None for a blank or comment line; ValueError
    for anything else."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    tag, slash, number = text.partition("/")
    if NAME.fullmatch(tag) and (not slash or NUMBER.fullmatch(number)):
        return tag, int(number) if slash else None
    raise ValueError(f"{text!r} is not tag/id or tag")


def check_number(name, value):
    """A setting that must be a non-negative integer (ID, NPROC, JOBS, ...), as an int."""
    if not NUMBER.fullmatch(value):
        raise UserError(f"{name}={value!r} is not a number: give a non-negative integer, e.g. {name}=0")
    return int(value)
