"""make report, make table's summary and the notebook API (issues 28 and 36): distinct runs pooled
(one per seed), the averaging of curves, and the report as a person sees it in headless Chromium:
a sweep's own grid, every tag in the monitored metric's figure, hover, an axis that fits runs on
one and two processes, media, nothing loaded from the network."""
import html
import json
import math
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "code"))
sys.path.insert(0, str(ROOT / "scripts"))
from gitexp import results  # noqa: E402
import report_figures  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]
# after the page has drawn: script errors, what each figure holds, a hover on tag `two`'s mean
# line through Plotly's own hook and the label it drew, a legend toggle, the page's widths
PROBE = """<script>window.seen = [];
window.addEventListener("error", e => window.seen.push(String(e.message || e.target.src)), true);
window.addEventListener("load", () => setTimeout(() => {
  const out = {errors: window.seen, figures: {}};
  for (const div of document.querySelectorAll(".figure")) out.figures[div.id] = {
    svg: div.querySelectorAll(".main-svg").length, layout: JSON.stringify(div.layout || {}),
    xaxis: ((div.layout || {}).xaxis || {}).title ? div.layout.xaxis.title.text : null,
    traces: (div.data || []).map(t => ({type: t.type, name: t.name || null, group: t.legendgroup || null,
      legend: t.showlegend !== false, last: t.x ? Array.from(t.x).slice(-1)[0] : null,
      labels: t.dimensions ? t.dimensions.map(d => d.label) : null}))};
  const div = document.getElementById("curves0");
  const i = div.data.findIndex(t => t.legendgroup === "two" && t.showlegend);
  Plotly.Fx.hover(div, [{curveNumber: i, pointNumber: div.data[i].x.length - 1}]);
  setTimeout(() => {
    out.hover = Array.from(div.querySelectorAll(".hoverlayer text")).map(t => t.textContent).join(" | ");
    toggle("other");
    out.hidden = Array.from(document.querySelectorAll(".figure")).filter(d => d.id.startsWith("curves"))
      .map(d => d.data.filter(t => t.legendgroup === "other").every(t => t.visible === "legendonly"));
    const last = a => {  // the last x of the mean lines of two and other, on axis a
      const button = document.querySelector(`#axes input[value=${a}]`);
      button.checked = true;
      button.dispatchEvent(new Event("change"));
      return div.data.filter(t => t.showlegend && ["two", "other"].includes(t.legendgroup))
        .map(t => [t.legendgroup, Array.from(t.x).slice(-1)[0], div.layout.xaxis.title.text]);
    };
    out.axes = {samples: last("samples"), step: last("step")};
    const box = document.querySelector(".scroll");
    out.widths = {page: document.documentElement.scrollWidth, box: box.clientWidth, table: box.scrollWidth};
    document.body.setAttribute("data-probe", JSON.stringify(out));
  }, 300);
}, 300));</script>"""


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, installed with apt-get where it is missing (as .ci/run does)."""
    if not shutil.which("chromium"):
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True,
                       capture_output=True, timeout=900)
    return shutil.which("chromium")


def browse(chromium, page, profile, *args):
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                           *args, page.as_uri()], capture_output=True, text=True, timeout=120)


def test_a_sweep_and_two_tags_in_one_report(project, chromium, tmp_path):
    """A 2 x 2 sweep x 2 seeds with a FIX=1 repeat of one seed, an unrelated tag, and a tag run on
    two processes: the summary, the terminal, the notebook API, the averaging by hand, and the
    report in Chromium."""
    project.configure(epochs=2)
    path = project.path / "code" / "sweeps" / "g.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text("lr = [0.001, 0.01]\nlr_step = [1, 2]\nruns_per_point = 2\n")
    project.git("add", str(path))
    project.git("commit", "-qm", "sweep g")
    project.make("sweep", NAME="g", JOBS="2", FIX="1", timeout=600)
    project.make("more", TAG="g-lr0.001-lr_step1", FIX="1")  # the point's first seed again: a repeat
    project.configure(dropout=0.1)
    project.make("run", TAG="other")  # differs in dropout, a hparam no sweep swept
    project.make("run", TAG="two", NPROC="2")  # half the steps of an epoch: its steps do not line up
    check_summary(project)
    check_averaging(project)
    tags = "g-lr0.001-lr_step1 g-lr0.001-lr_step2 g-lr0.01-lr_step1 g-lr0.01-lr_step2 other two"
    project.make("record", EXP=tags, LIST="all")
    check_report(project, chromium, tmp_path, tags.split())


def check_summary(project):
    out = project.make("table", LIST="g").stdout
    summary = results.summary("g", root=project.path, make=False)
    assert list(summary["count"]) == [2, 2, 2, 2] and list(summary["repeats"]) == [1, 0, 0, 0]
    assert list(summary["hparams.lr"]) == [0.001, 0.001, 0.01, 0.01]
    lines = out.splitlines()
    assert re.match(r"tag\s+lr\s+lr_step\s+count\s+repeats\s+best.val_acc", lines[2])
    assert re.match(r"g-lr0.001-lr_step1\s+0.001\s+1\s+2\s+1\s+\S+ ± \S+$", lines[3]) and max(map(len, lines[2:])) <= 120
    rows = results.rows("g", root=project.path)
    assert list(rows["repeat"]) == [False, False, True] + [False] * 6 and rows["id"].dtype.kind == "i"


def check_averaging(project):
    """mean and std at each step by hand, run 1 cut short by its last step"""
    curves = results.curves("g-lr0.001-lr_step1/0 g-lr0.001-lr_step1/1".split(), root=project.path, names=["val/loss"])
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


def check_report(project, chromium, tmp_path, tags):
    out = project.make("report", LIST="all").stdout
    page = project.path / "__statistic__" / "report" / "all.html"
    assert "report: __statistic__/report/all.html" in out and page.exists()
    made = page.stat().st_mtime_ns
    began = time.monotonic()
    again = project.make("report", LIST="all").stdout
    assert time.monotonic() - began <= 1.5  # a no-change remake: make's rule, nothing read
    assert again.strip() == "report: __statistic__/report/all.html" and page.stat().st_mtime_ns == made
    text = page.read_text()
    # nothing to load: plotly.js inline once, no src or href to the network outside the scripts
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)
    assert text.count("<script") == 2 and "<script src" not in text and text.count("* plotly.js v") == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup), markup
    # the numbers on the page are summary.csv's, to the digits shown; the monitored best first
    summary = results.summary("all", root=project.path, make=False)
    shown = re.findall(r'data-metric="([^"]+)" data-mean="([^"]+)" data-std="([^"]+)">([^<]*)<', text)
    stems = [c[:-len(".mean")] for c in summary.columns if c.endswith(".mean")]
    assert len(shown) == len(summary) * len(stems) and shown[0][0] == "metrics.best.val_acc"
    for metric, mean, std, cell in shown:
        row = summary[np.isclose(summary[f"{metric}.mean"], float(mean))].iloc[0]
        assert cell == f"{row[f'{metric}.mean']:.4g}" + (f" ± {row[f'{metric}.std']:.2g}" if std != "nan" else "")
    assert text.count("class=best") == 1 and "g-lr0.001-lr_step1/2 (repeat, not pooled)" in text
    assert re.search(r"x axis: epoch \(the runs differ in world size and steps per epoch", text)

    # in Chromium, through a proxy that refuses every connection: drawn all the same
    hooked = page.parent / "probed.html"  # beside it, so its links resolve alike
    hooked.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    dom = browse(chromium, hooked, tmp_path / "profile", "--proxy-server=127.0.0.1:9", "--window-size=1280,2000",
                 "--dump-dom")
    probe = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom.stdout).group(1)))
    assert probe["errors"] == [] and "CONSOLE" not in dom.stderr, (probe["errors"], dom.stderr)
    figures = probe["figures"]
    assert all(f["svg"] > 0 for f in figures.values()), figures.keys()
    # the monitored metric's figure first: every tag's mean in the legend, on the epoch axis
    first = figures["curves0"]
    assert first["xaxis"] == "epoch" and '"acc' in first["layout"]
    legend = [t for t in first["traces"] if t["legend"] and t["type"] == "scatter"]
    assert sorted(t["group"] for t in legend) == sorted(tags)
    assert {t["last"] for t in first["traces"] if t["group"] in ("two", "other") and t["last"] is not None} == {2}
    assert next(t for t in legend if t["group"] == "other")["name"].startswith("other (dropout=0.1, lr=0.002")
    assert "two/0" in probe["hover"] and "val/acc" in probe["hover"] and "epoch" in probe["hover"], probe["hover"]
    value = float(re.search(r"val/acc ([0-9.]+)", probe["hover"]).group(1))
    assert value == pytest.approx(results.statistic("two/0", root=project.path)["metrics"]["last"]["val_acc"], abs=1e-4)
    assert all(probe["hidden"]) and len(probe["hidden"]) >= 3
    # samples seen line up as epochs do (2 x 20 steps of 2 x 32 against 80 of 32); steps do not
    assert sorted(probe["axes"]["samples"]) == [["other", 2560, "samples"], ["two", 2560, "samples"]]
    assert sorted(probe["axes"]["step"]) == [["other", 80, "step"], ["two", 40, "step"]]
    # the sweep: its own grid (lr on a log axis, a line per lr_step), never dropout
    sweep = figures["sweep-g"]
    assert [t["name"] for t in sweep["traces"]] == ["lr_step=1", "lr_step=2"] and sweep["xaxis"] == "lr"
    assert '"type":"log"' in sweep["layout"] and "dropout" not in json.dumps(sweep)
    # the page fits 1280 px; the summary scrolls in its own box
    assert probe["widths"]["page"] <= 1280 and probe["widths"]["table"] >= probe["widths"]["box"], probe["widths"]
    # media: each run's latest confusion matrix embedded, the earlier one on its slider
    cards = re.findall(r'<div class=card data-items="([^"]*)">([^,]*), step <span class=step>(\d+)</span>(.*?)</div>',
                       text)
    confusion = [c for c in cards if "val_confusion of" in c[3]]
    assert len(confusion) == 11 and all('src="data:image/png;base64,' in c[3] and "type=range" in c[3]
                                          for c in confusion)
    items = json.loads(html.unescape(confusion[0][0]))
    assert [kind for _, kind, _ in items] == ["image", "image"] and items[0][2].startswith("../../__result__/")

    # TAGS: only those tags, in a page of their own
    project.make("report", LIST="all", TAGS="two other")
    tagged = (page.parent / "all.tags.html").read_text()
    assert "<h1>Report of all</h1>" in tagged and "2 runs, 2 tags" in tagged and "g-lr0.01" not in tagged

    shot = tmp_path / "shot.png"
    browse(chromium, page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1280) and (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.02  # ink


def test_the_figures_average_over_axes_that_fit():
    """Runs of one tag on one and two processes (an epoch of 40 steps and of 20): averaged on the
    epoch axis; runs of one world size on their steps; thinned lines; sweeps of 1 and 3 hparams;
    JSON that no string ends the script of."""
    one = {"tag": "t", "id": 0, "factors": {"step": 1.0, "epoch": 1 / 40, "samples": 32.0},
           "curves": {"val/acc": (np.array([40.0, 80.0]), np.array([0.5, 0.7]))}}
    two = {"tag": "t", "id": 1, "factors": {"step": 1.0, "epoch": 1 / 20, "samples": 64.0},
           "curves": {"val/acc": (np.array([20.0, 40.0]), np.array([0.6, 0.9]))}}
    assert report_figures.tag_unit([one, two]) == ("epoch", {"step": None, "epoch": 1.0, "samples": 1280.0})
    ((title, figure),) = report_figures.curve_figures([one, two], [("t", "t (lr=1)")], "val/acc")
    band, run0, run1, mean = figure["data"]
    assert list(mean["x"].values) == [1, 2] and list(mean["y"].values) == pytest.approx([0.55, 0.8])
    assert mean["f"] == [None, 1.0, 1280.0] and run1["f"] == [1.0, 0.05, 64.0] and mean["name"] == "t (lr=1)"
    assert list(band["y"].values) == pytest.approx([0.55 + 0.05 * 2 ** 0.5, 0.8 + 0.1 * 2 ** 0.5,
                                                    0.8 - 0.1 * 2 ** 0.5, 0.55 - 0.05 * 2 ** 0.5])
    steps = np.arange(100_000, dtype=float)
    x, y = report_figures.thinned(steps, steps, 2000)
    assert len(x) == 2000 and x[0] == 0 and x[-1] == 99_999
    grid, mean, std, n = report_figures.mean_line([(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])),
                                                   (np.array([1.0, 2]), np.array([3.0, 4]))])
    assert list(mean) == [2, 3, 3] and list(n) == [2, 2, 1] and math.isnan(std[-1])

    points = [(f"s-lr{lr}", {"lr": lr}, 0.9 - lr, 0.01, 2) for lr in (0.001, 0.01, 0.1)]
    single = report_figures.sweep_figure("s", {"lr": [0.001, 0.01, 0.1]}, points, "best.val_acc", True)
    assert single["layout"]["xaxis"]["type"] == "log" and single["data"][0]["error_y"]["array"] == [0.01] * 3
    grid3 = {"lr": [0.001, 0.1], "opt": ["adam", "sgd"], "width": [8, 16]}
    points = [(f"p{i}", {"lr": lr, "opt": o, "width": w}, 0.5 + i / 10, 0.0, 1)
              for i, (lr, o, w) in enumerate([(0.001, "adam", 8), (0.1, "sgd", 16)])]
    (parallel,) = report_figures.sweep_figure("p", grid3, points, "best.val_acc", True)["data"]
    assert parallel["type"] == "parcoords"
    assert [d["label"] for d in parallel["dimensions"]] == ["lr (log)", "opt", "width", "best.val_acc"]
    assert parallel["dimensions"][1]["values"] == [0, 1] and parallel["dimensions"][1]["ticktext"] == ["adam", "sgd"]
    assert report_figures.to_js({"a</script>": report_figures.Numbers([1.23456789, float("nan")])}) == \
        '{"a\\u003c/script>":[1.2346,null]}'


def test_texts_and_pictures_latest_first_earlier_on_a_slider(tmp_path, monkeypatch):
    """A language model's generated texts and a picture at three evaluations: the latest shown,
    the earlier ones in the card's items (texts embedded, earlier pictures linked)."""
    import pandas as pd
    import report

    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "__result__" / "lm" / "0" / "media" / "val_sample"
    pictures = texts.parent / "val_grid"
    texts.mkdir(parents=True)
    pictures.mkdir()
    for step in (10, 20, 30):
        (texts / f"{step}.txt").write_text(f"def <b>{step}</b> ü")
        (pictures / f"{step}.png").write_bytes(b"\x89PNG fake " + bytes([step]))
    (texts / ".30.txt.tmp1").write_text("a torn write")
    section = report.media_section(pd.DataFrame({"tag": ["lm"], "id": [0]}), {"lm"})
    assert section.index("<h3>val_grid</h3>") < section.index("<h3>val_sample</h3>")
    cards = re.findall(r'<div class=card data-items="([^"]*)">lm/0, step <span class=step>30</span>(.*?)</div>', section)
    (grid_items, grid), (text_items, text) = cards
    assert "<pre>def &lt;b&gt;30&lt;/b&gt; ü</pre>" in text and "type=range min=0 max=2" in text
    assert [i[:2] for i in json.loads(html.unescape(text_items))] == [[10, "text"], [20, "text"], [30, "text"]]
    assert json.loads(html.unescape(text_items))[0][2] == "def <b>10</b> ü"
    items = json.loads(html.unescape(grid_items))
    assert items[0][2] == "../../__result__/lm/0/media/val_grid/10.png" and items[2][2].startswith("data:image/png;base64,")
