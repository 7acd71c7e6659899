"""Random sequences of the whole tool (issue 25), in the spirit of a stateful property-based
test: run, more, SIGKILL and SIGTERM at random moments, continue, rerun, rm, restore, a small
sweep, record and table, on a throw-away copy with a tiny config; after every step the
invariants below must hold. A failure names the seed and the step: the seed replays it
(pytest -k 'sequence and <seed>'). A short version runs in make test, the long one in make
test-faults."""
import json
import math
import os
import random
import re
import signal
import time

import pytest

from conftest import process_tree, wait_for

TAGS = ("a", "b")


class Sequence:
    def __init__(self, project, seed):
        self.project, self.rng, self.seed = project, random.Random(seed), seed
        self.created = {}  # (tag, id): its start time and seed, as first seen
        self.log = []

    def make(self, *args, quiet=False, **variables):
        result = self.project.make(*args, check=False, timeout=600, **variables)
        if not quiet:  # the operations, not the looks of the checks
            self.log.append(f"make {' '.join(args)} {' '.join(f'{k}={v}' for k, v in variables.items())} "
                            f"-> {result.returncode}")
        if result.returncode != 0:  # a refusal is fine, but one line and no traceback
            assert "Traceback" not in result.stdout + result.stderr, self.where(result.stderr)
        return result

    def where(self, detail=""):
        return f"seed {self.seed}, after: {'; '.join(self.log)}\n{detail}"

    # ---- what is there -------------------------------------------------------------------------

    def runs(self, root="__result__"):
        found = {}
        for path in (self.project.path / root).glob("*/*/statistic.json"):
            if path.parent.name.isdigit():
                found[(path.parent.parent.name, int(path.parent.name))] = json.loads(path.read_text())
        return found

    def pick(self, status=None):
        choices = sorted(k for k, s in self.runs().items() if status is None or s["status"] == status)
        return self.rng.choice(choices) if choices else None

    # ---- the operations ------------------------------------------------------------------------

    def op_run(self):
        self.make("run", TAG=self.rng.choice(TAGS), FIX="1")

    def op_more(self):
        self.make("more", TAG=self.rng.choice(TAGS), **({"FIX": "1"} if self.rng.random() < 0.5 else {}))

    def interrupted(self, how):
        process = self.project.start("run", TAG=self.rng.choice(TAGS), FIX="1")
        time.sleep(self.rng.uniform(0.3, 3.5))
        everything = process_tree(process.pid)
        if process.poll() is None:
            if how == "kill":
                os.killpg(process.pid, signal.SIGKILL)
            elif how == "term":
                os.killpg(process.pid, signal.SIGTERM)
            elif how == "term every process":  # scancel, systemd, killall: each process its own SIGTERM
                for pid in everything:
                    os.kill(pid, signal.SIGTERM)
            else:  # a supervisor signals the command it started: make alone
                os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=300)
        self.log.append(f"run, {how} -> {process.returncode}")
        if how != "kill":  # make waited for all of the run, which stopped (or failed for a reason of its own)
            alive = [pid for pid in everything if os.path.exists(f"/proc/{pid}") and
                     open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
            assert not alive, self.where(f"processes outlived make: {alive}")
            assert "Traceback" not in err, self.where(err)

    def op_kill(self):
        self.interrupted("kill")

    def op_term(self):
        self.interrupted("term")

    def op_term_every(self):
        self.interrupted("term every process")

    def op_term_make(self):
        self.interrupted("term make")

    def op_beside(self):
        """A second command while a run runs: another run of its tag, a continue or an rm of it."""
        tag = self.rng.choice(TAGS)
        first = self.project.start("run", TAG=tag, FIX="1")
        time.sleep(self.rng.uniform(0.5, 2.5))
        second = self.rng.choice(["run", "continue", "rm"])
        if second == "rm":
            running = sorted(n for (t, n), s in self.runs().items() if t == tag and s["status"] == "running")
            if running:
                self.make("rm", EXP=f"{tag}/{running[-1]}")
        else:
            self.make(second, TAG=tag, **({"FIX": "1"} if second == "run" else {}))
        first.communicate(timeout=300)
        self.log.append(f"run beside it -> {first.returncode}")

    def op_continue(self):
        self.make("continue", TAG=self.rng.choice(TAGS))

    def op_rerun(self):
        picked = self.pick("finished")
        if picked:
            self.make("rerun", TAG=picked[0], ID=str(picked[1]))

    def op_rm(self):
        picked = self.pick()
        if picked:
            self.make("rm", EXP=f"{picked[0]}/{picked[1]}")

    def op_restore(self):
        trashed = sorted(self.runs("__result__/.trash"))
        if trashed:
            tag, number = self.rng.choice(trashed)
            self.make("restore", EXP=f"{tag}/{number}")

    def op_sweep(self):
        self.make("sweep", NAME="tiny", FIX="1")

    def op_record(self):
        picked = self.pick("finished")
        if picked:
            self.make("record", EXP=self.rng.choice([f"{picked[0]}/{picked[1]}", picked[0]]), LIST="l")

    def op_table(self):
        if (self.project.path / "__statistic__" / "exper-list" / "l.txt").exists():
            result = self.make("table", LIST="l")
            assert result.returncode == 0, self.where(result.stderr)

    # ---- the invariants ------------------------------------------------------------------------

    def check(self):
        runs, trash = self.runs(), self.runs("__result__/.trash")
        for key, statistic in {**runs, **trash}.items():
            first = self.created.setdefault(key, (statistic["start"], statistic["seed"]))
            assert first == (statistic["start"], statistic["seed"]), self.where(f"id {key} given twice")
        assert not runs.keys() & trash.keys(), self.where("a run both in the results and the trash")
        assert set(self.created) == runs.keys() | trash.keys(), self.where("a run was lost")
        for (tag, number), statistic in runs.items():
            self.check_run(tag, number, statistic)
        self.check_ls(runs)
        self.check_reruns(runs)
        self.check_table(runs)

    def check_run(self, tag, number, statistic):
        folder = self.project.result(tag, number)
        name = f"{tag}/{number}"
        files = [p.name for p in (folder / "checkpoint").glob("*.pth")] if (folder / "checkpoint").is_dir() else []
        assert statistic["status"] in ("running", "stopped", "failed", "finished"), self.where(name)
        assert statistic["conditions"]["world_size"] == statistic["world_size"] == 1, self.where(name)
        if statistic["epoch"]:
            assert f"epoch_{statistic['epoch']}.pth" in files, self.where(f"{name}: epoch {statistic['epoch']} {files}")
        legs = statistic.get("legs") or []
        if legs and statistic["status"] != "running":  # the last leg ended as the run stands
            assert legs[-1]["ended"] == statistic["status"], self.where(f"{name}: {legs[-1]} {statistic['status']}")
        assert "error" not in statistic or statistic["status"] == "failed", self.where(f"{name}: {statistic['error']}")
        if statistic["status"] == "finished":
            assert statistic["epoch"] == statistic["hparams"]["epochs"] and "epoch_last.pth" in files, self.where(name)
            assert statistic["data"]["fingerprint"] and "at_end" not in statistic["data"], self.where(name)
            assert f"{name}" in self.project.finished(), self.where(f"{name} not in finished.txt")

    def check_ls(self, runs):
        """make ls and make ls TAG agree with the records (no process runs between steps)."""
        out = self.make("ls", quiet=True).stdout.splitlines()
        counts = {line.split()[0]: line.split()[2:6] for line in out[1:]}
        for tag in {t for t, _ in runs}:
            statuses = [s["status"] if s["status"] != "running" else "stopped" for (t, _), s in runs.items() if t == tag]
            expected = [str(statuses.count(s)) for s in ("finished", "running", "stopped", "failed")]
            assert counts.get(tag) == expected, self.where(f"ls: {tag} {counts.get(tag)} != {expected}")
            listed = self.make("ls", quiet=True, TAG=tag).stdout.splitlines()[1:]
            shown = {int(line.split()[0]): line.split()[1] for line in listed}
            assert shown == {n: (s["status"] if s["status"] != "running" else "stopped")
                             for (t, n), s in runs.items() if t == tag}, self.where(f"ls TAG={tag}: {shown}")

    def check_reruns(self, runs):
        for (tag, number), statistic in runs.items():
            source = runs.get(tuple([statistic.get("rerun_of", "/").split("/")[0],
                                     int(statistic.get("rerun_of", "x/-1").split("/")[1])]))
            if source and statistic["status"] == source["status"] == "finished" and source["fix"]:
                assert statistic["metrics"] == source["metrics"], self.where(f"{tag}/{number} != its source")

    def check_table(self, runs):
        summary = self.project.path / "__statistic__" / "table" / "l.summary.csv"
        if not summary.exists() or not self.log[-1].startswith("make table"):
            return
        import pandas
        table = pandas.read_csv(summary)
        listed = self.listed(runs)
        for _, row in table.iterrows():
            distinct = {}
            for (tag, number) in sorted(listed):
                statistic = runs[(tag, number)]
                if tag == row["tag"] and statistic["status"] == "finished":
                    distinct.setdefault(statistic["seed"], statistic)
            monitor = next(iter(distinct.values()))["hparams"]["monitor"] if distinct else None
            values = [s["metrics"]["best"][monitor] for s in distinct.values()]
            assert row["count"] == len(values), self.where(f"table count {row['tag']}: {row['count']} != {len(values)}")
            mean = row.get(f"metrics.best.{monitor}.mean")
            if values and mean is not None and not math.isnan(mean):
                assert math.isclose(mean, math.fsum(values) / len(values), rel_tol=1e-9), self.where(row["tag"])

    def listed(self, runs):
        found = set()
        for line in (self.project.path / "__statistic__" / "exper-list" / "l.txt").read_text().split():
            tag, _, number = line.partition("/")
            found |= {(t, n) for t, n in runs if t == tag and (not number or n == int(number))}
        return found


OPERATIONS = ["run", "run", "more", "kill", "term", "term_every", "term_make", "continue", "continue", "rerun", "rm",
              "restore", "sweep", "record", "table", "table", "beside"]


def play(project, seed, steps):
    project.configure(epochs=2, channels=4, hidden=8, batch_size=16)
    (project.path / "code" / "sweeps").mkdir()
    (project.path / "code" / "sweeps" / "tiny.py").write_text("lr = [0.002, 0.004]\n")
    project.git("add", "-A")
    project.git("commit", "-qm", "sweep tiny")
    sequence = Sequence(project, seed)
    for _ in range(steps):
        getattr(sequence, f"op_{sequence.rng.choice(OPERATIONS)}")()
        sequence.check()
    print(f"seed {seed}: {len(sequence.log)} commands, {len(sequence.created)} runs made:", *sequence.log, sep="\n  ")
    return sequence


@pytest.mark.parametrize("seed", [1])
def test_a_random_sequence_keeps_every_invariant(project, seed):
    play(project, seed, steps=10)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 8))
def test_a_long_random_sequence_keeps_every_invariant(project, seed):
    play(project, seed, steps=16)
