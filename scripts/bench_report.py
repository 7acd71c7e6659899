"""How fast is make report, and how large is its page? `python scripts/bench_report.py [--runs N ...]
[--json PATH]` (make bench)

In a temp copy of this template (Makefile, scripts/, code/ as they are in the working tree) it
writes, for each N (default 9, 100 and 1,000), N fake finished runs: statistic.json as a 10-epoch
run writes it, in tags of 10 seeds (3 of 3 for N=9) whose lr and dropout differ, a sweep's record
over them; TensorBoard events with six evaluation curves at each epoch's end and three step
curves of STEPS steps; a picture per epoch (media/val_confusion/<step>.png). Then:
    cold       make report after make table: every run read, the figures, the page written
    no change  make report again, as typed: make's rule, nothing read or written
    page       the page's size in MB
Goals (issue 36): at 100 runs the cold report <= 10 s and its page <= 10 MB; a no-change remake
<= 1 s. Each row is printed with its ratio to its goal. --json PATH writes the figures as JSON.
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
from bench_tables import fake_statistic, template_copy  # noqa: E402
from gitexp.events import EventFile  # noqa: E402

LIST, EPOCHS, EPOCH_STEPS = "bench", 10, 200
STEPS = EPOCHS * EPOCH_STEPS
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def picture(side=120):
    """A grey PNG of side x side pixels, the size of the example's confusion matrix."""
    rows = b"".join(b"\x00" + bytes(range(0, 2 * side, 2))[:side] for _ in range(side))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data)))  # noqa: E731
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def events_of(folder, seed):
    """A run's events file: train, val and test loss and acc at each epoch's end, step/loss,
    step/acc and step/lr at every step, noisy around a curve that learns."""
    rng = np.random.default_rng(seed)
    file = EventFile(folder)
    progress = np.arange(1, STEPS + 1) / STEPS
    loss = 2.3 * np.exp(-3 * progress) + rng.normal(0, 0.05, STEPS)
    for step in range(STEPS):
        file.scalars(step + 1, [("step/loss", float(loss[step])), ("step/acc", float(1 - loss[step] / 2.5)),
                                ("step/lr", 0.002)])
        if (step + 1) % EPOCH_STEPS == 0:
            value = float(loss[step])
            file.scalars(step + 1, [(f"{split}/{name}", value * scale + rng.normal(0, 0.01))
                                    for split in ("train", "val", "test")
                                    for name, scale in (("loss", 1.0), ("acc", -0.3))])
    file.close()


def prepare(folder, runs):
    """N runs in tags of 10 seeds (3 of 3 for 9 runs), each seed's events written once and copied."""
    template_copy(folder)
    per_tag = 3 if runs < 10 else 10
    seeds = folder / "seeds"
    for seed in range(per_tag):
        events_of(seeds / str(seed), seed)
    rng, names, points, png = random.Random(0), [], [], picture()
    for i in range(runs):
        tag, number = f"t{i // per_tag:04d}", i % per_tag
        statistic = fake_statistic(tag, number, rng)
        statistic["hparams"]["lr"] = 0.001 * (1 + i // per_tag)
        statistic["step"] = STEPS  # an epoch: its steps over its epochs, as for a run that recorded no more
        run = folder / "__result__" / tag / str(number)
        shutil.copytree(seeds / str(number), run / "tensorboard")
        (run / "statistic.json").write_text(json.dumps(statistic, indent=2) + "\n")
        for epoch in range(1, EPOCHS + 1):
            (run / "media" / "val_confusion").mkdir(parents=True, exist_ok=True)
            (run / "media" / "val_confusion" / f"{epoch * EPOCH_STEPS}.png").write_bytes(png)
        if number == 0:
            points.append({"tag": tag, "values": {"lr": statistic["hparams"]["lr"]}})
        names.append(f"{tag}/{number}")
    lists = folder / "__statistic__" / "exper-list"
    lists.mkdir(parents=True)
    (lists / f"{LIST}.txt").write_text("".join(f"{name}\n" for name in names))
    sweeps = folder / "__statistic__" / "sweeps"
    sweeps.mkdir(parents=True)
    (sweeps / "s.json").write_text(json.dumps({"name": "s", "grid": {"lr": [p["values"]["lr"] for p in points]},
                                               "runs_per_point": per_tag, "points": points, "runs": []}))
    time.sleep(2.1)  # older than a timestamp's tick: as finished runs are


def timed(folder, *goals):
    command = ["make", *goals, f"LIST={LIST}", f"PYTHON={sys.executable}"]
    began = time.perf_counter()
    result = subprocess.run(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr}")
    return time.perf_counter() - began


def measure(runs):
    with tempfile.TemporaryDirectory(prefix="bench_report.") as tmp:
        folder = Path(tmp)
        prepare(folder, runs)
        timed(folder, "table")
        cold = timed(folder, "report")
        page = folder / "__statistic__" / "report" / f"{LIST}.html"
        made = page.stat().st_mtime_ns
        again = timed(folder, "report")
        if page.stat().st_mtime_ns != made:
            sys.exit("error: make report with nothing changed rewrote the page")
        return {"runs": runs, "cold_s": round(cold, 3), "nochange_s": round(again, 3),
                "page_mb": round(page.stat().st_size / 1e6, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[9, 100, 1000], help="runs (default 9 100 1000)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args()
    figures = [measure(runs) for runs in args.runs]
    print(f"make report, {STEPS} steps a run ({EPOCHS} epochs), {os.cpu_count()} CPUs:")
    ratios = {}
    for f in figures:
        goal = " (goal <= 10 s, <= 10 MB)" if f["runs"] == 100 else ""
        if f["runs"] == 100:
            ratios[f"cold, {f['runs']} runs"] = round(f["cold_s"] / 10, 3)
            ratios[f"page, {f['runs']} runs"] = round(f["page_mb"] / 10, 3)
        ratios[f"no change, {f['runs']} runs"] = round(f["nochange_s"] / 1, 3)
        print(f"  {f['runs']:>5} runs  cold {f['cold_s']:7.2f} s  page {f['page_mb']:6.2f} MB  "
              f"no change {f['nochange_s']:5.2f} s (goal <= 1 s){goal}")
    result = {"steps_a_run": STEPS, "sizes": figures, "ratios": ratios,
              "goals_met": all(r <= 1 for r in ratios.values())}
    print(f"  goals {'met' if result['goals_met'] else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
