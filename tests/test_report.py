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


def test_repeats_of_a_seed_are_not_pooled(project):
    project.configure(epochs=2)
    project.make("run", TAG="a", FIX="1")
    project.make("more", TAG="a", FIX="1")  # the tag's own seed again: a repeat
    out = project.make("table", LIST="finished").stdout
    summary = results.summary("finished", root=project.path, make=False)
    assert list(summary["count"]) == [1] and list(summary["repeats"]) == [1]
    assert re.search(r"^a\s+1\s+1\s", out, re.M) and "repeats" in out and max(map(len, out.splitlines()[2:])) <= 120
    rows = results.rows("finished", root=project.path)
    assert list(rows["repeat"]) == [False, True] and rows["id"].dtype.kind == "i"
    full = project.make("table", LIST="finished", FULL="1").stdout
    assert "a/0" in full and "a/1" in full

    # the averaging, by hand: run 1 cut short by its last step
    curves = results.curves("a", root=project.path, names=["val/loss"])
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
    assert len(stats) == curves["step"].nunique() >= 2


def test_the_report_of_a_sweep_as_a_person_sees_it(project, chromium, tmp_path):
    project.configure(epochs=2)
    path = project.path / "code" / "sweeps" / "g.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text("lr = [0.001, 0.1]\nruns_per_point = 2\n")
    project.git("add", str(path))
    project.git("commit", "-qm", "sweep g")
    project.make("sweep", NAME="g", JOBS="2", FIX="1", timeout=600)
    out = project.make("report", LIST="g").stdout
    page = project.path / "__statistic__" / "report" / "g.html"
    assert "report: __statistic__/report/g.html" in out and page.exists()
    made = page.stat().st_mtime_ns
    again = project.make("report", LIST="g").stdout
    assert again.strip() == "report: __statistic__/report/g.html" and page.stat().st_mtime_ns == made
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<svg" not in text  # plots are PNG

    # the numbers on the page are summary.csv's
    summary = results.summary("g", root=project.path, make=False)
    shown = re.findall(r'data-metric="([^"]+)" data-mean="([^"]+)" data-std="([^"]+)"', text)
    assert len(shown) == len(summary) * sum(c.endswith(".mean") for c in summary.columns)
    expected = {(m, float(summary.loc[i, f"metrics.{m}.mean"])) for i in summary.index
                for m in (c[len("metrics."):-len(".mean")] for c in summary.columns if c.endswith(".mean"))}
    assert {(m, float(mean)) for m, mean, _ in shown} == expected
    assert list(summary["count"]) == [2, 2] and 'class="best"' in text

    # in Chromium: no errors, every image decoded, a screenshot that is not blank
    hooked = tmp_path / "hooked.html"
    hooked.write_text(text.replace("<head>", "<head>" + ERROR_HOOK, 1))
    shutil.copy(hooked, page.parent / "hooked.html")  # beside it, so its links resolve alike
    dom = browse(chromium, page.parent / "hooked.html", "--dump-dom")
    assert json.loads(re.search(r"data-errors=\"([^\"]*)\"", dom.stdout).group(1).replace("&quot;", '"')) == []
    assert "CONSOLE" not in dom.stderr, dom.stderr
    shot = tmp_path / "shot.png"
    browse(chromium, page, f"--screenshot={shot}", "--window-size=1200,1600")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] == 1600 and (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.02  # ink on the page
