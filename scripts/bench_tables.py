"""How fast are make title and make table? `python scripts/bench_tables.py [--quick] [--n N] [--json PATH]`

In a temp copy of this template (Makefile, scripts/, code/ as they are in the working tree) it
writes N fake experiments (default 10,000; --quick: 1,000), statistic.json files shaped like
real ones, 100 ids a tag, and a list naming them all, then measures, side by side in each of
--repeat rounds (the median is reported):
    cold      make title, then make table, with no title, table or .deps file yet
    loop      a bare Python script that reads the same files with json and builds a pandas
              DataFrame: a fresh interpreter, like each step of the make path
    nochange  make table again with nothing changed (it must rewrite nothing)
Goals: cold <= 2 x loop, nochange <= cold / 10. Tables go to /dev/null, not to the terminal.
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
LOOP = """
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
        "hparams": {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0, "channels": 64, "hidden": 128,
                    "dropout": rng.choice([0.0, 0.25, 0.5]), "epochs": 10, "batch_size": 32,
                    "lr": rng.choice([0.001, 0.002, 0.005]), "weight_decay": 0.0, "lr_step": 4,
                    "lr_gamma": 0.5, "keep_checkpoints": None},
        "metrics": {"best": split_metrics(rng.randrange(1, 11)), "last": split_metrics(10)},
        "durations": {"epoch_seconds": seconds, "total_seconds": round(sum(seconds), 3)},
    }


def prepare(folder, n):
    for part in ("Makefile", "scripts", "code"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / part)
    rng = random.Random(0)
    names = []
    for i in range(n):
        tag, number = f"t{i // 100:04d}", i % 100
        path = folder / "__result__" / tag / str(number) / "statistic.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fake_statistic(tag, number, rng), indent=2) + "\n")
        names.append(f"{tag}/{number}")
    lists = folder / "__statistic__" / "exper-list"
    lists.mkdir(parents=True)
    (lists / f"{LIST}.txt").write_text("".join(f"{name}\n" for name in names))


def timed(command, folder):
    began = time.perf_counter()
    result = subprocess.run(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr}")
    return seconds


def make(folder, *goals):
    return timed(["make", *goals, f"LIST={LIST}", f"PYTHON={sys.executable}"], folder)


def outputs(folder):
    paths = [folder / "__statistic__" / sub / f"{LIST}{suffix}" for sub, suffix in
             (("title", ".json"), ("table", ".csv"), ("table", ".summary.csv"), ("table", ".txt"))]
    return {p.name: p.stat().st_mtime_ns for p in paths}


def round_of(folder):
    for stale in ("title", "table", ".deps"):
        shutil.rmtree(folder / "__statistic__" / stale, ignore_errors=True)
    figures = {"loop": timed([sys.executable, "-c", LOOP, f"__statistic__/exper-list/{LIST}.txt"], folder)}
    figures["cold"] = make(folder, "title") + make(folder, "table")
    before = outputs(folder)
    figures["nochange"] = make(folder, "table")
    if outputs(folder) != before:
        sys.exit("error: make table with nothing changed rewrote a file")
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
        prepare(folder, n)
        rounds = [round_of(folder) for _ in range(max(1, args.repeat))]
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    result = {
        "experiments": n, "rounds": len(rounds), "cpus": os.cpu_count(),
        "cold_title_table_s": round(median["cold"], 3), "bare_loop_s": round(median["loop"], 3),
        "nochange_table_s": round(median["nochange"], 3),
        "cold_over_loop": round(median["cold"] / median["loop"], 2),
        "nochange_over_cold": round(median["nochange"] / median["cold"], 3),
    }
    result["goals_met"] = result["cold_over_loop"] <= 2 and result["nochange_over_cold"] <= 0.1
    print(f"{n} experiments, median of {len(rounds)} rounds:")
    print(f"  make title + make table, cold  {result['cold_title_table_s']:7.3f} s")
    print(f"  bare json + pandas loop        {result['bare_loop_s']:7.3f} s")
    print(f"  make table, nothing changed    {result['nochange_table_s']:7.3f} s")
    print(f"  cold / loop = {result['cold_over_loop']} (goal <= 2), nochange / cold = "
          f"{result['nochange_over_cold']} (goal <= 0.1): {'met' if result['goals_met'] else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
