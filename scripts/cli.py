"""The launcher's command-line convention: a user's mistake is a UserError, printed as one
`error:` line with a non-zero exit, never a traceback; a script's one command-line word picks
what it does, and its settings come from the environment, never from a shell's text.
Standard library only.
"""
import os
import sys


class UserError(Exception):
    """A mistake the user can fix; reported as one line, never as a traceback."""


def env(name):
    """A setting the Makefile passed through the environment ("" where it is not given)."""
    return os.environ.get(name, "")


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
    except KeyboardInterrupt:  # what is written is whole (every file is written through a rename)
        print("stopped (Ctrl+C)", file=sys.stderr)
        sys.exit(130)


def run_mode(modes, settings="settings come from the environment", status=2):
    """A script's one command-line word: run modes[word] through run() (a UserError: one line,
    exit `status`); any other command line is answered with the usage."""
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit(f"usage: python {sys.argv[0]} {'|'.join(modes)} ({settings})")
    run(modes[sys.argv[1]], status=status)


def check_switch(name, meaning):
    """A 0-or-1 setting (FIX, FULL, CHANGED, YES, ...): True for 1; a UserError saying what
    `name`=1 does where it is anything else."""
    value = env(name)
    if value not in ("", "0", "1"):
        raise UserError(f"{name}={value!r} is not 0 or 1: {name}=1 {meaning}")
    return value == "1"
