"""How the launcher (scripts/launch.py, scripts/check.py) and the loop (code/main.py) speak,
defined once for both: the environment the loop is started with, its modes, its exit statuses
and the files they meet in. Standard library only: the launcher imports it without torch.

    launcher                                           loop
    environment(): GITEXP_DIR, GITEXP_MODE, ...  ->    mode(), the settings below
                                                 <-    STARTED written once a run or a continue
                                                       is accepted (a live TensorBoard may start)
    STOP touched on SIGTERM, SIGUSR1, Ctrl+C     ->    every rank stops at a step they agree on
                                                 <-    the exit status; ERROR: the first error
                                                       line, whichever rank had it
"""
import json
import os
from pathlib import Path

# the modes: a recorded run, its continue, and the launcher's looks before it writes anything
RUN, CONTINUE = "run", "continue"
CHECK_RESUME = "check"  # before a continue with several processes: would main.py resume?
CHECK_INIT = "check-init"  # before a run whose config.py sets init_from: does it fit?
MODES = (RUN, CONTINUE, CHECK_RESUME, CHECK_INIT)

# the loop's exit statuses
DONE = 0
FAILED = 1
REFUSED = 3  # bad input: nothing was changed
STOPPED = 75  # stopped on request after a checkpoint: continuable (EX_TEMPFAIL: try again later)
INTERRUPTED = 130  # a second Ctrl+C: at once, the last checkpoint stays the place to go on from


class Refused(Exception):
    """A problem with the experiment's files that the user must fix; nothing was written: one
    line, and the exit status REFUSED."""


class ConfigError(Exception):
    """A config value the run cannot work with: one line, the run marked failed (FAILED)."""


# files in the experiment folder
STOP = ".stop"
STARTED = ".started"
ERROR = ".error"

# the environment (make check's runs: GITEXP_CHECK full|half, GITEXP_STOP_AT a step)
_FOLDER, _MODE, _INIT, _CONDITIONS, _ACCEPT_DATA = (
    "GITEXP_DIR", "GITEXP_MODE", "GITEXP_INIT", "GITEXP_CONDITIONS", "GITEXP_ACCEPT_DATA")
CHECK, STOP_AT = "GITEXP_CHECK", "GITEXP_STOP_AT"
CHECK_EPOCH_STEPS = 12  # make check cuts longer epochs to this, so it crosses epochs' ends in seconds


def check_epoch():
    """In make check's runs, the steps an epoch is cut to; None in a real run."""
    return CHECK_EPOCH_STEPS if os.environ.get(CHECK) else None


def environment(folder, mode, init=None, conditions=None, accept_data=False):
    """The variables the launcher adds to the loop's environment: the experiment folder, the
    mode, and where they apply the warm start a rerun must find again ({"epoch", "sha256"}),
    the conditions a continue goes on with (recorded), and ACCEPT_DATA=1."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    variables = {_MODE: mode}
    if folder is not None:
        variables[_FOLDER] = str(folder)
    if init:
        variables[_INIT] = json.dumps({"epoch": init["epoch"], "sha256": init["sha256"]})
    if conditions is not None:
        variables[_CONDITIONS] = json.dumps(conditions)
    if accept_data:
        variables[_ACCEPT_DATA] = "1"
    return variables


def folder():
    """The experiment folder to record into; None where main.py runs alone (records nothing)."""
    given = os.environ.get(_FOLDER)
    return Path(given) if given else None


def mode():
    given = os.environ.get(_MODE, RUN)
    if given not in MODES:
        raise ValueError(f"{_MODE}={given!r} is not one of {', '.join(MODES)}")
    return given


def init_expected():
    given = os.environ.get(_INIT)
    return json.loads(given) if given else None


def changed_conditions():
    given = os.environ.get(_CONDITIONS)
    return json.loads(given) if given else None


def accepting_data():
    return os.environ.get(_ACCEPT_DATA) == "1"


def clear(experiment, keep_error=False):
    """The launcher's, before it starts the loop (nothing of a leg before) and after (the error
    kept until it is read): these files live as long as one leg."""
    for name in (STOP, STARTED) if keep_error else (STOP, STARTED, ERROR):
        (Path(experiment) / name).unlink(missing_ok=True)


def mark_started(experiment):
    (Path(experiment) / STARTED).touch()


def started(experiment):
    return (Path(experiment) / STARTED).exists()


def record_error(experiment, line):
    """The loop's first error line (any rank's), for the launcher to repeat: the first wins."""
    if experiment is None:
        return
    try:
        fd = os.open(Path(experiment) / ERROR, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:  # another rank's came first, or the disk is full: the log has it
        return
    try:
        os.write(fd, line.encode(errors="replace")[:4000])
    except OSError:
        pass
    finally:
        os.close(fd)


def first_error(experiment):
    try:
        return (Path(experiment) / ERROR).read_text(errors="replace").strip() or None
    except OSError:
        return None
