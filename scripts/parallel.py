"""Work over many statistic.json files in two or more processes (fork, results through a pipe
as marshal: plain values only). Standard library only; fork before importing anything that
starts threads.
"""
import marshal
import os

from cli import UserError


def in_child(job, write_end):
    """In a forked child: job()'s result (or its error) through the pipe, then exit at once."""
    try:
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


def in_parallel(jobs):
    """Call each of `jobs` (functions of no argument) at the same time: the first in this
    process, each other one in a forked process. Their results, in order; the first UserError
    in job order is raised, as a plain loop would meet it."""
    children = []
    for job in jobs[1:]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            in_child(job, write_end)
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
