"""Why do two experiments differ: `python scripts/diff.py` (make diff A=x/0 B=y/1 [FULL=1]).

Prints the hparams that differ, every metric side by side with its change (and make eval's
latest metrics, eval.<set>_<metric>, where either has been evaluated), the run facts that differ
(seed, fix, the recorded conditions: world size, threads, data fingerprints, versions, host,
GPU), the names and sizes that differ in the runs' own files (__result__/<tag>/<id>/files/,
gitexp.run_dir(); nothing where they are the same), and the code: `git diff` of the two tags
over code/ (--stat; the whole diff with FULL=1). A bare tag on either side stands for the mean
over its distinct finished runs: one per seed, a rerun or a FIX=1 repeat of a seed left out (it
is the same sample again). Input comes from the environment (A, B, FULL).
"""
import hashlib
import os
import statistics
import subprocess
import sys

from cli import UserError, check_switch, env, run
from facts import compared_facts, evaluated, evaluated_by, flatten, parting_words
from gitexp.layout import OWN_FILES
from lists import parse_word
from repo import commit_of
from store import RESULTS, read_statistic, runs_of_tag, statistic_path

CONTENT_LIMIT = 64 << 20  # own files compared by content up to this size, by size above it


def side(name, text):
    """(label, [statistic, ...]) of `text`: tag/id, or a bare tag (its finished ids)."""
    if not text:
        raise UserError(f"{name} is missing: make diff A=x/0 B=y/1 compares two experiments (a bare tag: the mean of its ids)")
    tag, number = parse_word(name, text)
    if number is not None:
        if not os.path.isfile(statistic_path(tag, number)):
            raise UserError(f"{name}: there is no experiment {tag}/{number} (make ls TAG={tag} shows its ids)")
        return f"{tag}/{number}", [read_statistic(f"{tag}/{number}")]
    finished = [s for _, s in runs_of_tag(tag) if s.get("status") == "finished"]
    if not finished:
        raise UserError(f"{name}: tag {tag} has no finished experiment (make ls lists the tags)")
    distinct = list({s.get("seed"): s for s in reversed(finished)}.values())[::-1]  # the first run of each seed
    repeats = len(finished) - len(distinct)
    apart = f"; {repeats} repeat{'s' if repeats > 1 else ''} of a seed left out" if repeats else ""
    return f"{tag} (mean of {len(distinct)} distinct run{'s' if len(distinct) > 1 else ''}{apart})", distinct


def hparams_of(runs):
    return flatten(runs[0].get("hparams", {}), "", {})


def metrics_of(runs, of=lambda run: flatten(run.get("metrics", {}), "", {})):
    """Each metric's value (`of` a run: its flat metrics), or its mean over the runs."""
    flats = [of(run) for run in runs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    means = {}
    for key in keys:
        values = [flat[key] for flat in flats if isinstance(flat.get(key), (int, float))]
        means[key] = statistics.mean(values) if len(values) == len(flats) else None
    return means


def facts_of(runs_a, runs_b):
    """The run facts, each side's values joined where a bare tag has several."""
    joined = {}
    for side, runs in enumerate((runs_a, runs_b)):
        for run in runs:
            for fact, value in compared_facts(run).items():
                joined.setdefault(fact, (set(), set()))[side].add(str(value))
    for fact, field in (("seed", "seed"), ("FIX", "fix")):
        joined[fact] = ({str(r.get(field)) for r in runs_a}, {str(r.get(field)) for r in runs_b})
    return {fact: (", ".join(sorted(a)), ", ".join(sorted(b))) for fact, (a, b) in joined.items()}


def number(value):
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def side_by_side(prefix, a_values, b_values):
    """Rows of the values of two sides, with their change."""
    rows = [("", "A", "B", "B - A")]
    for key in dict.fromkeys([*a_values, *b_values]):
        a, b = a_values.get(key), b_values.get(key)
        delta = f"{b - a:+.6g}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ""
        rows.append((f"{prefix}.{key}", number(a), number(b), delta))
    return rows


def file_contents(statistic):
    """{name under the run's files/ folder: (its size in bytes, the sha256 of a file up to
    CONTENT_LIMIT bytes)}: predictions of a fixed shape differ in content, not in size."""
    folder = RESULTS / statistic["tag"] / str(statistic["id"]) / OWN_FILES
    return {str(path.relative_to(folder)): (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
                                            if path.stat().st_size <= CONTENT_LIMIT else None)
            for path in sorted(folder.rglob("*")) if path.is_file()} if folder.is_dir() else {}


def own_files(run_a, run_b):
    """The files that differ, in name, size or content, between two runs' own files/ folders;
    nothing where none do."""
    files_a, files_b = file_contents(run_a), file_contents(run_b)
    differ = [name for name in sorted(files_a.keys() | files_b.keys()) if files_a.get(name) != files_b.get(name)]
    if differ:
        print(f"\n{OWN_FILES}/ that differ (bytes):")
        table([("", "A", "B", "")] + [
            (name, number(files_a.get(name, (None,))[0]), number(files_b.get(name, (None,))[0]),
             "other content" if name in files_a and name in files_b and files_a[name][0] == files_b[name][0] else "")
            for name in differ])


def main():
    a_text, b_text = env("A").strip(), env("B").strip()
    label_a, runs_a = side("A", a_text)
    label_b, runs_b = side("B", b_text)
    if a_text == b_text:
        raise UserError(f"A and B are both {a_text}: name two different experiments")
    full = check_switch("FULL", "shows the whole code diff")
    print(f"A = {label_a}    B = {label_b}")

    hp_a, hp_b = hparams_of(runs_a), hparams_of(runs_b)
    changed = [(k, number(hp_a.get(k)), number(hp_b.get(k))) for k in dict.fromkeys([*hp_a, *hp_b])
               if hp_a.get(k) != hp_b.get(k)]
    print("\nhparams that differ:" if changed else "\nhparams: the same")
    if changed:
        table([("", "A", "B")] + [(f"hparams.{k}", a, b) for k, a, b in changed])

    print("\nmetrics:")
    table(side_by_side("metrics", metrics_of(runs_a), metrics_of(runs_b)))
    e_a, e_b = metrics_of(runs_a, evaluated), metrics_of(runs_b, evaluated)
    if e_a or e_b:
        print("\nmake eval, each metric's latest evaluation:")
        table(side_by_side("eval", e_a, e_b))
        by_a, by_b = evaluated_by(runs_a), evaluated_by(runs_b)
        unlike = sorted(name for name in e_a.keys() & e_b.keys() if by_a.get(name) != by_b.get(name))
        if unlike:
            print(f"  note: {', '.join(unlike)} of A and B come from unlike evaluations (A: "
                  f"{'; '.join(sorted({by_a[n] for n in unlike}))}; B: {'; '.join(sorted({by_b[n] for n in unlike}))})")

    facts = [(fact, a, b) for fact, (a, b) in facts_of(runs_a, runs_b).items() if a != b]
    print("\nrun facts that differ:" if facts else
          f"\nrun facts: the same ({', '.join(facts_of(runs_a, runs_a))})")
    if facts:
        table([("", "A", "B")] + facts)
    if len(runs_a) == len(runs_b) == 1 and not facts:  # the same seed and conditions: should they be equal?
        where = parting_words(*((run, RESULTS / run["tag"] / str(run["id"])) for run in (runs_a[0], runs_b[0])))
        if where:
            print(f"\n{where}")

    if len(runs_a) == len(runs_b) == 1:
        own_files(runs_a[0], runs_b[0])

    commit_a, commit_b = runs_a[0].get("commit"), runs_b[0].get("commit")
    if commit_a == commit_b:
        print(f"\ncode: the same commit {str(commit_a)[:10]}")
        return
    known = [c for c in (commit_a, commit_b) if c and commit_of(c)]
    if len(known) < 2:
        print("\ncode: a commit is missing from this repository (git fetch --tags?)")
        return
    print(f"\ncode: git diff {commit_a[:10]} {commit_b[:10]} -- code/")
    sys.stdout.flush()
    options = [] if full else ["--stat"]
    subprocess.run(["git", "--no-pager", "diff", *options, commit_a, commit_b, "--", "code"],
                   env=dict(os.environ, GIT_PAGER="cat"))


if __name__ == "__main__":
    run(main, status=2)
