"""make report, make table's summary and the notebook API (issue 28): distinct runs pooled (one
per seed), the report as a person sees it in headless Chromium, the averaging of curves."""
import json
import math
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "code"))
from gitexp import results  # noqa: E402

# after the page loaded: the script errors and the images that did not decode, as an attribute
ERROR_HOOK = """<script>window.seen = [];
window.addEventListener("error", e => window.seen.push(String(e.message || e.target.src)), true);
window.addEventListener("load", () => { for (const i of document.images) if (!i.naturalWidth) window.seen.push("broken " + i.alt);
  document.body.setAttribute("data-errors", JSON.stringify(window.seen)); });</script>"""


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, installed with apt-get where it is missing (as .ci/run does)."""
    if not shutil.which("chromium"):
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True,
                       capture_output=True, timeout=900)
    return shutil.which("chromium")


def browse(chromium, page, *args):
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_a_sweeps_report_table_and_curves(project, chromium, tmp_path):
    """A sweep of 2 points x 2 seeds, and a FIX=1 repeat of one point's seed: its summary, the
    terminal, the notebook API, the averaging by hand, and the report in Chromium."""
    project.configure(epochs=2)
    path = project.path / "code" / "sweeps" / "g.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text("lr = [0.001, 0.1]\nruns_per_point = 2\n")
    project.git("add", str(path))
    project.git("commit", "-qm", "sweep g")
    project.make("sweep", NAME="g", JOBS="2", FIX="1", timeout=600)
    project.make("more", TAG="g-lr0.001", FIX="1")  # the point's first seed again: a repeat
    check_summary(project)
    check_averaging(project)
    check_report(project, chromium, tmp_path)


def check_summary(project):
    out = project.make("table", LIST="g").stdout
    summary = results.summary("g", root=project.path, make=False)
    assert list(summary["count"]) == [2, 2] and list(summary["repeats"]) == [1, 0]
    assert list(summary["hparams.lr"]) == [0.001, 0.1]
    lines = out.splitlines()
    assert re.match(r"tag\s+lr\s+count\s+repeats\s+best.val_acc", lines[2])
    assert re.match(r"g-lr0.001\s+0.001\s+2\s+1\s+\S+ ± \S+$", lines[3]) and max(map(len, lines[2:])) <= 120
    rows = results.rows("g", root=project.path)
    assert list(rows["repeat"]) == [False, False, True, False, False] and rows["id"].dtype.kind == "i"
    full = project.make("table", LIST="g", FULL="1").stdout
    assert "g-lr0.001/2" in full and "hparams.lr" in full


def check_averaging(project):
    """mean and std at each step by hand, run 1 cut short by its last step"""
    curves = results.curves("g-lr0.001/0 g-lr0.001/1".split(), root=project.path, names=["val/loss"])
    last = curves["step"].max()
    cut = curves[~((curves["id"] == 1) & (curves["step"] == last))]
    stats = results.mean_curves(cut).set_index("step")
    for step, group in cut.groupby("step"):
        values = list(group["value"])
        assert stats.loc[step, "n"] == len(values)
        assert stats.loc[step, "mean"] == pytest.approx(sum(values) / len(values))
        if len(values) == 2:
            assert stats.loc[step, "std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert stats.loc[last, "n"] == 1 and math.isnan(stats.loc[last, "std"])
    assert len(stats) == curves["step"].nunique() == 2


def check_report(project, chromium, tmp_path):
    out = project.make("report", LIST="g").stdout
    page = project.path / "__statistic__" / "report" / "g.html"
    assert "report: __statistic__/report/g.html" in out and page.exists()
    made = page.stat().st_mtime_ns
    again = project.make("report", LIST="g").stdout
    assert again.strip() == "report: __statistic__/report/g.html" and page.stat().st_mtime_ns == made
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<svg" not in text  # plots are PNG
    assert text.count("<img") == 1 + 2 and "g-lr0.001/2 (repeat, not pooled)" in text

    # the numbers on the page are summary.csv's, to the digits shown
    summary = results.summary("g", root=project.path, make=False)
    shown = re.findall(r'data-metric="([^"]+)" data-mean="([^"]+)" data-std="([^"]+)">([^<]*)<', text)
    stems = [c[:-len(".mean")] for c in summary.columns if c.endswith(".mean")]
    assert len(shown) == len(summary) * len(stems)
    expected = [(m, summary.loc[i, f"{m}.mean"], summary.loc[i, f"{m}.std"]) for i in summary.index for m in stems]
    for (metric, mean, std, cell), (m, csv_mean, csv_std) in zip(shown, expected):
        assert (metric, float(mean)) == (m, csv_mean) and float(std) == pytest.approx(csv_std, nan_ok=True)
        assert cell == f"{csv_mean:.4g} ± {csv_std:.2g}"
    assert text.count('class="best"') == 1

    # in Chromium: no errors, every image decoded, a screenshot that is not blank
    hooked = page.parent / "hooked.html"  # beside it, so its links resolve alike
    hooked.write_text(text.replace("<head>", "<head>" + ERROR_HOOK, 1))
    dom = browse(chromium, hooked, "--dump-dom")
    assert json.loads(re.search(r"data-errors=\"([^\"]*)\"", dom.stdout).group(1).replace("&quot;", '"')) == []
    assert "CONSOLE" not in dom.stderr, dom.stderr
    shot = tmp_path / "shot.png"
    browse(chromium, page, f"--screenshot={shot}", "--window-size=1200,1600")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] == 1600 and (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.02  # ink on the page
