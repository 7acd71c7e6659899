"""What tracking costs: `make bench` (BENCH_QUICK=1 for a version that finishes in about a minute).

In a throw-away copy of this template (the working tree's files, `git init`, one commit, a
short training in code/config.py), side by side in one run:
  tracking overhead  the example's training loop with everything on (`make run`: progress bar,
                     per-step TensorBoard scalars, log capture, statistic.json and a checkpoint
                     every epoch) against the same loop with all of it off (`python code/main.py`
                     with TQDM_DISABLE=1: records nothing), alternating, several repetitions.
                     Each side's time is the loop's own "trained in" figure, so start-up and
                     imports stay out of it; R = the median of each pair's on / off, with
                     its 90% interval (resampled pairs): how far the noise leaves R. Each
                     run's environment is padded to a random size (layout_padded).
  launch cost        the wall time of the command minus its loop time, for `make run` and for
                     `python code/main.py`: what the template adds before and after training.
  tables             scripts/bench_tables.py at 10,000 experiments (1,000 quick): make ls over
                     1,000 tags, make title + make table cold against a bare read of every
                     statistic.json into pandas, with nothing changed, and with one new
                     experiment, and the table step's peak memory, each with its goal.
                     BENCH_SCALE=n: only this part, at n experiments (100000: years of results).
  report             scripts/bench_report.py: make report at 9, 100 and 1,000 generated runs (9 and
                     100 quick), cold and with nothing changed, and the page's size, with its goals.
  sweep              make sweep of 8 one-epoch runs with JOBS=2 against the ideal: the runs'
                     own wall times summed, divided by 2 (scheduling efficiency, goal >= 0.9).
  checkpoint stall   what a checkpoint of about 100 MB costs the training thread: its state copied
                     to the CPU (from the GPU where there is one), serialised and written on the
                     writer thread; against all of it on the training thread, as a share of a
                     2 s epoch (the writer thread's rent: >= 1%).
  on a GPU           the tracking overhead with GPUS=0, and the GPU's utilisation during the
                     loop of make run (nvidia-smi, sampled every 100 ms); skipped without CUDA.
  data pinning       what finding a prepared data set of 1 GB (100 MB quick) costs each run
                     (gitexp.datastore.ensure: the key of data.py, every record compared),
                     against preparing and fingerprinting it once.
The table is printed and written to __statistic__/bench.json.
"""
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SCALE = os.environ.get("BENCH_SCALE", "")
REPEATS = 2 if QUICK else 40  # pairs: one run's loop time wanders by 5 to 15% on a shared VM, so its median needs many
EPOCHS = 2 if QUICK else 6
IDENTITY = ["-c", "user.name=gitexp bench", "-c", "user.email=bench@localhost"]


def copy_template(folder):
    """The working tree as it would be committed, as a fresh repository."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            (folder / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / os.fsdecode(name))
    config = folder / "code" / "config.py"
    config.write_text(re.sub(r"^epochs = .*$", f"epochs = {EPOCHS}", config.read_text(), flags=re.M))
    if (ROOT / "__data__").is_dir():
        shutil.copytree(ROOT / "__data__", folder / "__data__")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *IDENTITY, *command], cwd=folder, check=True, capture_output=True)


def timed(command, folder, env):
    """(wall seconds, the loop's own seconds) of one training command."""
    began = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    found = re.search(r"trained in ([0-9.]+)s", result.stdout)
    if result.returncode != 0 or not found:
        sys.exit(f"error: benchmark run failed: {' '.join(command)}\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return wall, float(found.group(1))


def checkpoint_stall():
    """What a checkpoint of about 100 MB (a model's parameters, no optimizer) costs the training
    thread: the copy gitexp/record.py takes there (the writer thread serialises, writes, fsyncs
    and renames it), against all of that done on the training thread; each as a share of a
    2 s epoch, a realistic run's shortest. The writer thread stays only while this buys >= 1%."""
    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT / "code"))
    from gitexp.checkpoint import serialize, snapshot
    from gitexp.files import publish, stage

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(6)]).to(device)  # 25.2 M parameters
    state = {"model": model.state_dict()}
    taken, inline = [], []
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:  # the project's disk, as a run's
        path = Path(folder) / "epoch_1.pth"
        for _ in range(2 if QUICK else 5):
            began = time.perf_counter()
            snapshot(state)
            taken.append(time.perf_counter() - began)  # what the training thread waits for
            began = time.perf_counter()
            publish(stage(path, serialize(snapshot(state))), path)
            inline.append(time.perf_counter() - began)
        size = path.stat().st_size
    stall, written = statistics.median(taken), statistics.median(inline)
    return {"device": device, "checkpoint_mb": round(size / 2**20, 1), "stall_ms": round(stall * 1000, 1),
            "inline_ms": round(written * 1000, 1), "saved_pct_of_2s_epoch": round((written - stall) / 2 * 100, 1)}


def gpu_utilisation(folder, env, python):
    """Mean GPU utilisation (%) while make run GPUS=0 trains, sampled by nvidia-smi."""
    sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                "-lms", "100"], stdout=subprocess.PIPE, text=True)
    try:
        timed(["make", "run", "TAG=gpu", "GPUS=0", "FIX=1", "TB=0", f"PYTHON={python}"], folder, env)
    finally:
        sampler.terminate()
    samples = [int(line) for line in sampler.communicate()[0].split() if line.strip().isdigit()]
    return round(statistics.mean(samples), 1) if samples else None


def cuda_available():
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def tracking(folder, gpu=False):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    python = sys.executable  # bench.py runs under $PY; a relative $PY would not hold in the copy
    # both sides FIX=1: the direct run uses code/seed and deterministic kernels, so must make run;
    # on a GPU both use it (python code/main.py takes the GPU where there is one)
    on_command = ["make", "run", "TAG=bench", "FIX=1", "TB=0", f"PYTHON={python}"] + (["GPUS=0"] if gpu else [])
    off_command = [python, "code/main.py"]
    subprocess.run(["make", "data", f"PYTHON={python}"], cwd=folder, env=env, check=True, capture_output=True)
    sides = {"off": (off_command, dict(env, TQDM_DISABLE="1")), "on": (on_command, env)}
    timed(sides["off"][0], folder, sides["off"][1])  # warm the file cache
    times = {"off": [], "on": []}
    draw = random.Random(0)
    for repetition in range(REPEATS):
        # off, on, on, off, ...: a machine that speeds up or slows down over the minutes
        # favours neither side
        for side in ("off", "on") if repetition % 2 == 0 else ("on", "off"):
            command, side_env = sides[side]
            times[side].append(timed(command, folder, layout_padded(side_env, draw)))
    on, off = times["on"], times["off"]
    loop_on, loop_off = (statistics.median(t for _, t in runs) for runs in (on, off))
    launch_on, launch_off = (statistics.median(w - t for w, t in runs) for runs in (on, off))
    # each repetition's pair ran a few seconds apart: its ratio is free of the machine's drift
    # over minutes (a shared VM's speed wanders by 30%), which a ratio of medians is not
    ratios = sorted(a[1] / b[1] for a, b in zip(on, off))
    return {"epochs": EPOCHS, "repeats": REPEATS,
            "loop_on_s": round(loop_on, 3), "loop_off_s": round(loop_off, 3),
            "tracking_overhead": round(statistics.median(ratios), 3),
            "tracking_overhead_90": [round(bound, 3) for bound in median_interval(ratios)],
            "pair_ratios": [round(r, 3) for r in ratios],
            "launch_make_run_s": round(launch_on, 3), "launch_python_s": round(launch_off, 3)}


def layout_padded(env, draw):
    """`env` with a variable of random length. The environment's size moves the stack, and
    with it how a process's memory falls into the caches: a few % faster or slower, the same
    each time (Mytkowicz et al., "Producing wrong data without doing anything obviously
    wrong!", ASPLOS 2009). Here two variables more made `python code/main.py` 1% slower. At
    random on both sides, that bias becomes noise, which the pairs' median evens out."""
    return dict(env, GITEXP_BENCH_PADDING="x" * draw.randrange(4096))


def median_interval(values, level=0.9, resamples=2000):
    """How far a median of noisy values can be trusted: the middle `level` of the medians of
    `resamples` resamplings of them (bootstrap), the same each time (seeded)."""
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(resamples))
    cut = int(resamples * (1 - level) / 2)
    return medians[cut], medians[-cut - 1]


def sweep_efficiency(folder):
    config = folder / "code" / "config.py"
    config.write_text(re.sub(r"^epochs = .*$", "epochs = 1", config.read_text(), flags=re.M))
    (folder / "code" / "sweeps").mkdir(exist_ok=True)
    (folder / "code" / "sweeps" / "bench.py").write_text("lr = [0.001, 0.002, 0.003, 0.004]\nruns_per_point = 2\n")
    for command in (["add", "-A"], ["commit", "-qm", "sweep"]):
        subprocess.run(["git", *IDENTITY, *command], cwd=folder, check=True, capture_output=True)
    began = time.perf_counter()
    subprocess.run(["make", "sweep", "NAME=bench", "JOBS=2", f"PYTHON={sys.executable}"], cwd=folder,
                   check=True, capture_output=True)
    wall = time.perf_counter() - began
    runs = json.loads((folder / "__statistic__" / "sweeps" / "bench.json").read_text())["runs"]
    ideal = sum(run["seconds"] for run in runs) / 2
    return {"runs": len(runs), "wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "efficiency": round(ideal / wall, 3)}


# a data.py whose prepare() writes `file_bytes` of random bytes into each of `n_files` files
PINNED_DATA = """import os


def prepare(cfg, folder):
    block = os.urandom(1 << 20)
    for n in range(cfg.n_files):
        with open(folder / f"part{n}.bin", "wb") as f:
            for _ in range(cfg.file_bytes >> 20):
                f.write(block)
"""
PINNING = """import json, statistics, sys, time
import config, data
from gitexp import datastore
began = time.perf_counter()
datastore.ensure(config, data)
prepared = time.perf_counter() - began
checks = []
for _ in range(int(sys.argv[1])):
    began = time.perf_counter()
    datastore.ensure(config, data)
    checks.append(time.perf_counter() - began)
print(json.dumps({"prepare_s": prepared, "check_s": statistics.median(checks)}))
"""


def data_pinning():
    size_mb = 100 if QUICK else 1024
    with tempfile.TemporaryDirectory() as folder:
        code = Path(folder) / "code"
        code.mkdir()
        (code / "config.py").write_text(f"n_files = 16\nfile_bytes = {size_mb // 16 << 20}\n")
        (code / "data.py").write_text(PINNED_DATA)
        env = dict(os.environ, PYTHONPATH=f"{code}{os.pathsep}{ROOT / 'code'}")
        result = subprocess.run([sys.executable, "-c", PINNING, "20"], cwd=folder, env=env,
                                capture_output=True, text=True, check=True)
        figures = json.loads(result.stdout.splitlines()[-1])
    return {"data_mb": size_mb, "prepare_s": round(figures["prepare_s"], 2), "check_s": round(figures["check_s"], 4)}


def tables():
    """bench_tables.py's figures; its table of rows is printed as it comes."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "tables.json"
        command = [sys.executable, str(ROOT / "scripts" / "bench_tables.py"), "--json", str(out)]
        command += ["--n", SCALE] if SCALE else ["--quick"] if QUICK else []
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def report():
    """bench_report.py's figures; its rows are printed as they come."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        command = [sys.executable, str(ROOT / "scripts" / "bench_report.py"), "--json", str(out)]
        command += ["--runs", "9", "100"] if QUICK else []
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def write_figures(figures):
    out = ROOT / "__statistic__" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


def main():
    if SCALE:
        if not SCALE.isdigit() or not 100 <= int(SCALE) <= 10**6:
            sys.exit(f"error: BENCH_SCALE={SCALE!r} is not a number of experiments from 100 to 1000000, e.g. BENCH_SCALE=100000")
        write_figures({"tables": tables()})
        return
    with tempfile.TemporaryDirectory() as folder:
        copy_template(Path(folder))
        figures = {"quick": QUICK, "tracking": tracking(Path(folder))}
        if cuda_available():
            env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
            figures["gpu"] = {"tracking": tracking(Path(folder), gpu=True),
                              "utilisation_pct": gpu_utilisation(Path(folder), env, sys.executable)}
        figures["sweep"] = sweep_efficiency(Path(folder))
    figures["checkpoint_stall"] = checkpoint_stall()
    figures["tables"] = tables()
    figures["data_pinning"] = data_pinning()
    figures["report"] = report()
    t, s, d = figures["tracking"], figures["tables"], figures["data_pinning"]
    rows = [
        ("tracking overhead", f"{t['tracking_overhead']:.3f}",
         f"median of {REPEATS} pairs' on/off ratios, 90% interval {t['tracking_overhead_90'][0]:.3f} to "
         f"{t['tracking_overhead_90'][1]:.3f} (pairs {t['pair_ratios'][0]:.3f} to {t['pair_ratios'][-1]:.3f}); "
         f"loop {t['loop_on_s']:.2f}s on / {t['loop_off_s']:.2f}s off, {EPOCHS} epochs (goal <= 1.05)"),
        ("launch cost", f"{t['launch_make_run_s'] / t['launch_python_s']:.2f}x",
         f"make run {t['launch_make_run_s']:.2f}s / python {t['launch_python_s']:.2f}s outside the loop"),
    ]
    if "gpu" in figures:
        g = figures["gpu"]
        rows.append(("GPU tracking overhead", f"{g['tracking']['tracking_overhead']:.3f}",
                     f"GPUS=0: loop {g['tracking']['loop_on_s']:.2f}s on / {g['tracking']['loop_off_s']:.2f}s off"))
        rows.append(("GPU utilisation", f"{g['utilisation_pct']}%", "mean over make run GPUS=0, nvidia-smi every 100 ms"))
    else:
        rows.append(("GPU", "-", "CUDA is not available here: make bench on a GPU adds its overhead and utilisation"))
    c = figures["checkpoint_stall"]
    rows.append(("checkpoint stall", f"{c['stall_ms']:.0f} ms",
                 f"a {c['checkpoint_mb']} MB checkpoint on {c['device']}: written on the training thread "
                 f"{c['inline_ms']:.0f} ms; the writer thread saves {c['saved_pct_of_2s_epoch']}% of a 2 s epoch "
                 "(goal >= 1%)"))
    w = figures["sweep"]
    rows.append(("sweep efficiency", f"{w['efficiency']:.3f}",
                 f"{w['runs']} one-epoch runs, JOBS=2: ideal {w['ideal_s']:.1f}s / make sweep {w['wall_s']:.1f}s (goal >= 0.9)"))
    rows.append(("data pinning, per run", f"{d['check_s'] * 1000:.1f} ms",
                 f"finding {d['data_mb']} MB of prepared data (goal < 100 ms); preparing it once: {d['prepare_s']:.1f}s"))
    rows.append(("tables", "met" if s["goals_met"] else "NOT met",
                 f"{s['experiments']} experiments: the rows printed above, with their goals"))
    r = next(f for f in figures["report"]["sizes"] if f["runs"] == 100)
    rows.append(("report", "met" if figures["report"]["goals_met"] else "NOT met",
                 f"make report of 100 runs: {r['cold_s']:.1f}s, {r['page_mb']:.1f} MB (goal <= 10 s, <= 10 MB); "
                 f"nothing changed {r['nochange_s']:.2f}s (goal <= 1 s); every size printed above"))
    width = max(len(name) for name, _, _ in rows)
    print(f"tracking overhead: {t['tracking_overhead']:.3f}")
    for name, value, detail in rows:
        print(f"  {name:<{width}}  {value:>9}  {detail}")
    write_figures(figures)


if __name__ == "__main__":
    main()
