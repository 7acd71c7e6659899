"""How fast are make ls, title and table on years of results?
`python scripts/bench_tables.py [--n N] [--quick] [--json PATH]` (make bench; BENCH_SCALE=N)

In a temp copy of this template (Makefile, scripts/, code/ as they are in the working tree) it
writes N fake experiments (default 10,000; --quick: 1,000), statistic.json files shaped like a
finished run's, 1,000 tags (N/1,000 ids each; fewer tags below 1,000 experiments), and a list
naming them all, then measures, each the median of --repeat rounds:
    ls          make ls over every tag: cold (nothing kept from before) and again
    floor       a bare Python script that reads every statistic.json with json into a pandas
                DataFrame, in a fresh interpreter like each step of the make path
    cold        make table (its title too, a prerequisite) with no title, table or .deps/ file yet
    no change   make table again, as typed, with nothing changed (nothing may be rewritten)
    one new     one experiment added to the list, then make table as typed (the title remade
                first, as its prerequisite); beside it, what reading that one file costs
                (json.load of it in this process)
    peak RSS    the largest process of the cold and the one-new make table (ru_maxrss)
Goals (issues 15 and 28): ls < 1 s at 1,000 tags; make table as typed with no change <= 0.5 s,
after one new experiment <= 1.0 s plus reading it; cold <= 1.2 x floor; peak RSS < 2 GB. Each
row is printed with its ratio to its goal.
--json PATH writes the figures as one JSON object. The exit status is 0 either way.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = "bench"
# Python's own default, bytecode kept in __pycache__, whatever this shell says: each make
# starts several scripts, and compiling them again each time is no part of the template's cost
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
FLOOR = """
import json, sys
import pandas as pd

def flat(tree, prefix, out):
    for key, value in tree.items():
        if isinstance(value, dict):
            flat(value, f"{prefix}{key}.", out)
        else:
            out[f"{prefix}{key}"] = value
    return out

rows = []
for line in open(sys.argv[1]).read().split():
    with open(f"__result__/{line}/statistic.json") as f:
        s = json.load(f)
    rows.append(flat({"hparams": s["hparams"], "metrics": s["metrics"]}, "", {"exper": line}))
frame = pd.DataFrame(rows)
"""
# a command's wall time and the peak RSS of its largest process, from a process of its own
MEASURED = ("import resource, subprocess, sys, time; began = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(time.perf_counter() - began, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def fake_statistic(tag, number, rng):
    """One statistic.json as code/main.py writes it after a finished 10-epoch run."""
    def split_metrics(epoch):
        return {"epoch": epoch} | {f"{split}_{k}": rng.random() for split in ("train", "val", "test")
                                    for k in ("loss", "acc")}
    seconds = [round(rng.uniform(1, 3), 3) for _ in range(10)]
    return {
        "tag": tag, "id": number, "commit": f"{rng.getrandbits(160):040x}", "status": "finished",
        "seed": rng.randrange(2**31), "fix": False, "host": "bench", "start": "2026-01-01T00:00:00+00:00",
        "end": "2026-01-01T00:01:00+00:00", "epoch": 10, "world_size": 1,
        "data": {"key": f"{rng.getrandbits(64):016x}", "fingerprint": f"{rng.getrandbits(256):064x}"},
        "environment": {"python": "3.11.7", "torch": "2.13.0", "cuda": None, "cudnn": None, "gpus": [],
                        "host": "bench", "cuda_visible_devices": None},
        "hparams": {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0, "channels": 64, "hidden": 128,
                    "dropout": rng.choice([0.0, 0.25, 0.5]), "epochs": 10, "batch_size": 32,
                    "lr": rng.choice([0.001, 0.002, 0.005]), "weight_decay": 0.0, "lr_step": 4,
                    "lr_gamma": 0.5, "init_from": None, "init_resume": False, "init_skip": [],
                    "monitor": "val_acc", "monitor_mode": "max", "keep_checkpoints": None, "checkpoint_every": 0},
        "metrics": {"best": split_metrics(rng.randrange(1, 11)), "last": split_metrics(10)},
        "durations": {"epoch_seconds": seconds, "total_seconds": round(sum(seconds), 3)},
    }


def write_statistic(folder, tag, number, rng):
    path = folder / "__result__" / tag / str(number) / "statistic.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fake_statistic(tag, number, rng), indent=2) + "\n")


def template_copy(folder):
    """The template's Makefile, scripts/ and code/ in `folder`, made a git repository."""
    for part in ("Makefile", "scripts", "code"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / part)
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)


def prepare(folder, n):
    template_copy(folder)
    rng = random.Random(0)
    per_tag = max(1, n // 1000)
    names = []
    for i in range(n):
        tag, number = f"t{i // per_tag:04d}", i % per_tag
        write_statistic(folder, tag, number, rng)
        names.append(f"{tag}/{number}")
    lists = folder / "__statistic__" / "exper-list"
    lists.mkdir(parents=True)
    (lists / f"{LIST}.txt").write_text("".join(f"{name}\n" for name in names))
    time.sleep(2.1)  # older than a timestamp's tick anywhere: as a lab's old results are
    return len({name.split("/")[0] for name in names})


def timed(command, folder):
    began = time.perf_counter()
    result = subprocess.run(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr}")
    return seconds


def make_command(*goals):
    return ["make", *goals, f"LIST={LIST}", f"PYTHON={sys.executable}"]


def measured(folder, *goals):
    """(seconds, peak RSS in MB) of make with `goals`."""
    out = subprocess.run([sys.executable, "-c", MEASURED, *make_command(*goals)], cwd=folder,
                         capture_output=True, text=True, check=True, env=ENV).stdout.split()
    return float(out[-2]), int(out[-1]) / 1024


def outputs(folder):
    paths = [folder / "__statistic__" / sub / f"{LIST}{suffix}" for sub, suffix in
             (("title", ".json"), ("table", ".csv"), ("table", ".summary.csv"))]
    return {p.name: p.stat().st_mtime_ns for p in paths}


def round_of(folder, number):
    figures = {}
    shutil.rmtree(folder / "__statistic__" / ".deps", ignore_errors=True)
    figures["ls_cold_s"] = timed(["make", "ls", f"PYTHON={sys.executable}"], folder)
    figures["ls_s"] = timed(["make", "ls", f"PYTHON={sys.executable}"], folder)
    for stale in ("title", "table", ".deps"):
        shutil.rmtree(folder / "__statistic__" / stale, ignore_errors=True)
    figures["floor_s"] = timed([sys.executable, "-c", FLOOR, f"__statistic__/exper-list/{LIST}.txt"], folder)
    seconds, figures["cold_table_rss_mb"] = measured(folder, "table")  # the title too, as its prerequisite
    figures["cold_s"] = seconds
    before = outputs(folder)
    figures["nochange_s"] = timed(make_command("table"), folder)
    if outputs(folder) != before:
        sys.exit("error: make table with nothing changed rewrote a file")
    # one new experiment, in a tag of its own, as make run adds it
    tag = f"new{number}"
    write_statistic(folder, tag, 0, random.Random(number))
    with open(folder / "__statistic__" / "exper-list" / f"{LIST}.txt", "a") as f:
        f.write(f"{tag}/0\n")
    began = time.perf_counter()
    with open(folder / "__result__" / tag / "0" / "statistic.json") as f:
        json.load(f)
    figures["read_one_s"] = time.perf_counter() - began
    figures["one_new_s"], figures["one_new_table_rss_mb"] = measured(folder, "table")
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="experiments (default 10000)")
    parser.add_argument("--quick", action="store_true", help="1000 experiments")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args()
    n = args.n or (1000 if args.quick else 10000)
    with tempfile.TemporaryDirectory(prefix="bench_tables.") as tmp:
        folder = Path(tmp)
        tags = prepare(folder, n)
        rounds = [round_of(folder, number) for number in range(max(1, args.repeat))]
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    result = {"experiments": n, "tags": tags, "rounds": len(rounds), "cpus": os.cpu_count(),
              **{key: round(value, 4) for key, value in median.items()}}
    result["peak_rss_mb"] = round(max(median["cold_table_rss_mb"], median["one_new_table_rss_mb"]), 1)
    rows = [  # what, seconds (or MB), the goal, and the goal's value the figure is compared with
        (f"make ls, {tags} tags", result["ls_s"], f"< 1 s (cold, nothing kept: {result['ls_cold_s']:.3f} s)", 1.0),
        ("bare read into pandas (floor)", result["floor_s"], "", None),
        ("cold make table (title too)", result["cold_s"], "<= 1.2 x floor", 1.2 * result["floor_s"]),
        ("no change, make table", result["nochange_s"], "<= 0.5 s", 0.5),
        ("one new experiment, make table", result["one_new_s"],
         f"<= 1.0 s + reading it ({result['read_one_s'] * 1000:.1f} ms)", 1.0 + result["read_one_s"]),
        ("peak RSS of the table step", result["peak_rss_mb"], "< 2048 MB", 2048),
    ]
    result["ratios"] = {what: round(value / goal, 3) for what, value, _, goal in rows if goal}
    result["goals_met"] = all(ratio <= 1 for ratio in result["ratios"].values())
    print(f"{n} experiments, {tags} tags, median of {len(rounds)} rounds, {os.cpu_count()} CPUs:")
    for what, value, goal_text, goal in rows:
        unit = "MB" if "RSS" in what else "s"
        ratio = f"{value / goal:6.3f} of the goal" if goal else ""
        print(f"  {what:<34} {value:9.3f} {unit:<2}  {ratio:<18}  {goal_text}")
    print(f"  goals {'met' if result['goals_met'] else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
