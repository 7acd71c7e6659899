"""Write a list's report: `python scripts/report.py` (make report LIST=record; TAGS="a b").

__statistic__/report/<LIST>.html, one self-contained page that loads nothing from the network
(plotly.js embedded once, the figures as JSON; it can be mailed, less its links into
__result__/), made from make table's files, the runs' statistic.json and TensorBoard events, the
sweeps' records and the runs' media:
    - the summary: per tag (a sweep's point) the monitored best first (mean ± std over distinct
      runs, one per seed), the hparams that differ between tags, the runs pooled and the repeats
      left out, each other metric; the best row marked; wider than the window, it scrolls in its box;
    - curves, one figure per metric family (acc: val/acc, train/acc, ...), the monitored one first:
      a line per tag, its mean over its distinct runs with a ± std band, its runs faint, its
      colour the same in every figure, its legend entry naming the hparams that differ; a click
      on it hides the tag in every figure. The x axis: step, epoch (step / the steps of an
      epoch) or samples seen (step x batch_size x world size), epoch by default where the runs
      differ in world size, batch size or steps per epoch; the page says which, and which axes a
      run lacks. The CURVE_TAGS best tags only, so a list of thousands of runs stays a page;
    - sweeps: for each sweep with points in the list, its own grid (its record in
      __statistic__/sweeps/): the monitored metric against one swept hparam with error bars, a
      line per value of a second, parallel coordinates for more;
    - media: each run's latest picture and text per name (media/<set>_<name>/<step>.png, .txt),
      the earlier ones a slider away (the latest embedded where small, the others linked);
    - links to each run's log and statistic.json.
It is make's file target, remade when the list's table, a sweep's record or these scripts change.
With TAGS, only those tags, in __statistic__/report/<LIST>.tags.html, made each time. Input comes
from the environment.
"""
import base64
import html
import json
import os
import time
from pathlib import Path

import numpy as np

from cli import UserError, env, run
from gitexp import events, results
from gitexp.files import atomic_write
from lists import list_name
from report_figures import AXES, curve_figures, sweep_figure, to_js

REPORTS = Path("__statistic__/report")
SWEEPS = Path("__statistic__/sweeps")
CURVE_TAGS = 30
EMBEDDED_IMAGE = 100_000  # a latest picture up to this size is embedded, the page's pictures up to
EMBEDDED_IMAGES = 2_000_000  # this many bytes in all; the others are linked (../../__result__/...)
TEXT_CHARS = 2000  # a text's characters shown (its file has the rest)
STYLE = """body{font-family:sans-serif;margin:1.2em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px}.scroll{overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}
th.monitored,td.monitored{background:#f3f7ff}tr.best td{background:#e4f5e4;font-weight:bold}
h2{margin-top:1.4em}.note{color:#555;font-size:13px}.figure{width:100%;min-height:300px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px;font-size:12px;max-width:300px}
.card img{max-width:288px;min-width:96px;image-rendering:pixelated;display:block}.card pre{white-space:pre-wrap;max-height:200px;overflow:auto;margin:4px 0}
.card input{width:100%}#axes label{margin-right:1em}"""
# the page's own glue (no chart code): draw each figure on the chosen axis, hide a tag in every
# figure from a legend click, step through a run's earlier media
SCRIPT = """
const AXES = %s;
let axis = %s;
const hidden = {};
function place(fig) {  // each curve trace's x on the chosen axis, from its base unit and factor
  const k = AXES.indexOf(axis);
  return fig.data.map(t => {
    const f = t.f ? t.f[k] : 1;
    return f === null ? [] : t.f ? t.base.map(v => v === null ? null : v * f) : t.x;
  });
}
function draw() {
  for (const fig of FIGURES) {
    const div = document.getElementById(fig.id);
    if (!fig.drawn) {
      for (const t of fig.data) if (t.f) { t.base = t.x; t.template = t.hovertemplate; }
      const xs = place(fig);
      fig.data.forEach((t, i) => { if (t.f) { t.x = xs[i];
        if (t.template) t.hovertemplate = t.template.replace("{AXIS}", axis); } });
      if (fig.curves) fig.layout.xaxis.title.text = axis;
      Plotly.newPlot(div, fig.data, fig.layout, {displaylogo: false, responsive: true});
      if (fig.curves) div.on("plotly_legendclick", e => { toggle(e.data[e.curveNumber].legendgroup); return false; });
      fig.drawn = true;
    } else if (fig.curves) {
      const templates = fig.data.map(t => t.template ? t.template.replace("{AXIS}", axis) : t.hovertemplate);
      Plotly.update(div, {x: place(fig), hovertemplate: templates}, {"xaxis.title.text": axis, "xaxis.autorange": true});
    }
  }
}
function toggle(group) {  // a tag hidden or shown in every curve figure
  hidden[group] = !hidden[group];
  for (const fig of FIGURES.filter(f => f.curves)) {
    const which = fig.data.map((t, i) => t.legendgroup === group ? i : -1).filter(i => i >= 0);
    if (which.length) Plotly.restyle(fig.id, {visible: hidden[group] ? "legendonly" : true}, which);
  }
}
document.querySelectorAll("#axes input").forEach(b => b.addEventListener("change", () => { axis = b.value; draw(); }));
document.querySelectorAll(".card input[type=range]").forEach(s => s.addEventListener("input", () => {
  const card = s.closest(".card"), items = JSON.parse(card.dataset.items), [step, kind, value] = items[s.value];
  card.querySelector(".step").textContent = step;
  const img = card.querySelector("img"), pre = card.querySelector("pre");
  if (kind === "image") img.src = value; else if (kind === "text") pre.textContent = value;
  else pre.innerHTML = '<a href="' + value + '">the text at step ' + step + '</a>';
}));
draw();
"""


def monitored(summary):
    """The monitored metric's summary column stem (metrics.best.<monitor>), whether higher is
    better, and the monitor's name (val_acc)."""
    monitor = next((m for m in summary.get("hparams.monitor", []) if isinstance(m, str)), None)
    mode = next((m for m in summary.get("hparams.monitor_mode", []) if isinstance(m, str)), "max")
    if monitor is None:  # monitor = None: no metric picks a best epoch (a GAN's), so no best row
        return None, True, None
    stem = f"metrics.best.{monitor}"
    if f"{stem}.mean" not in summary:
        stems = [c[:-5] for c in summary.columns if c.endswith(".mean")]
        stem = next((s for s in stems if s.startswith("metrics.best.")), stems[0] if stems else None)
    return stem, mode != "min", monitor


def number(value, digits=4):
    return "" if value is None or value != value else format(value, f".{digits}g")


def label_of(row, swept):
    """A tag's legend entry: its name and the hparams that differ between the list's tags."""
    values = ", ".join(f"{h.removeprefix('hparams.')}={row[h]}" for h in swept)
    return f"{row['tag']} ({values})" if values else str(row["tag"])


def summary_table(summary, swept, stem, higher):
    """The summary: tag, the monitored best, the hparams that differ, count, repeats, the other
    metrics; in a box of its own that scrolls where it is wider than the window."""
    metrics = [c[:-5] for c in summary.columns if c.endswith(".mean")]
    metrics = sorted(metrics, key=lambda m: m != stem)
    best = (summary[f"{stem}.mean"].idxmax() if higher else summary[f"{stem}.mean"].idxmin()) if stem else None
    head = ["tag", *(m.removeprefix("metrics.") for m in metrics[:1]), *(h.removeprefix("hparams.") for h in swept),
            "count", "repeats", *(m.removeprefix("metrics.") for m in metrics[1:])]
    mark = ' class="monitored"'
    lines = ['<div class="scroll"><table id=summary><tr>'
             + "".join(f"<th{mark if i == 1 and stem else ''}>{html.escape(h)}</th>" for i, h in enumerate(head))
             + "</tr>"]

    def cell(row, m):
        mean, std = row[f"{m}.mean"], row[f"{m}.std"]
        text = number(mean) + (f" ± {number(std, 2)}" if std == std else "")
        return f'<span data-metric="{html.escape(m)}" data-mean="{mean!r}" data-std="{std!r}">{text}</span>'

    for index, row in summary.iterrows():
        cells = [html.escape(str(row["tag"]))]
        cells += [cell(row, m) for m in metrics[:1]]
        cells += [html.escape(str(row[h])) for h in swept] + [str(row["count"]), str(row.get("repeats", 0))]
        cells += [cell(row, m) for m in metrics[1:]]
        lines.append(f"<tr{' class=best' if index == best else ''}>"
                     + "".join(f"<td{mark if i == 1 and stem else ''}>{c}</td>" for i, c in enumerate(cells)) + "</tr>")
    return "\n".join(lines + ["</table></div>"])


# ---- the runs: their axes' factors and their curves -----------------------------------------------

def run_facts(statistic):
    """(factors {axis: from a step to it, or None}, why an axis is missing {axis: reason}) of a run:
    an epoch is the run's epoch_steps (or its steps over its epochs, for a finished run), samples
    are its batch_size hparam (each process's) times its world size."""
    hparams, reasons = statistic.get("hparams") or {}, {}
    steps = statistic.get("epoch_steps")
    if hparams.get("max_steps"):
        steps, reasons["epoch"] = None, "counted in steps (max_steps), no epochs"
    elif steps is None:
        epoch, step = statistic.get("epoch"), statistic.get("step")
        early = statistic.get("early_stop") and hparams.get("eval_every")
        if statistic.get("status") == "finished" and epoch and step and step % epoch == 0 and not early:
            steps = step // epoch
        else:
            reasons["epoch"] = "steps of an epoch not recorded"
    changed = (statistic.get("conditions") or {}).get("changed")
    if changed:
        steps = None
        reasons["epoch"] = reasons["samples"] = "world size changed on a continue"
    batch, world = hparams.get("batch_size"), statistic.get("world_size")
    samples = batch * world if isinstance(batch, int) and not isinstance(batch, bool) and isinstance(world, int) \
        and not changed else None
    if samples is None and "samples" not in reasons:
        reasons["samples"] = "no batch_size hparam"
    return {"step": 1.0, "epoch": 1 / steps if steps else None, "samples": samples}, reasons, (world, batch, steps)


def read_run(tag, number):
    """A run's facts and curves ({name: (steps, values)}, the final ~best/~last values left out)."""
    folder = results.run_dir(tag, number)
    try:
        statistic = json.loads((folder / "statistic.json").read_text())
    except (OSError, ValueError):
        statistic = {}
    factors, reasons, conditions = run_facts(statistic)
    points = events.scalars(folder / "tensorboard", prefix="") if (folder / "tensorboard").is_dir() else {}
    by_name = {}
    for (name, step), value in sorted(points.items(), key=lambda item: item[0][1]):
        if not name.startswith("~"):
            by_name.setdefault(name, ([], []))
            by_name[name][0].append(step)
            by_name[name][1].append(value)
    curves = {name: (np.asarray(s, dtype=float), np.asarray(v, dtype=float)) for name, (s, v) in by_name.items()}
    return {"tag": tag, "id": number, "factors": factors, "reasons": reasons, "conditions": conditions,
            "curves": curves}


def choose_axis(runs):
    """The default axis, the axes every run has, and a sentence for the page saying which and why."""
    available = [a for a in AXES if all(r["factors"][a] is not None for r in runs)]
    differ = [what for i, what in enumerate(("world size", "batch size", "steps per epoch"))
              if len({r["conditions"][i] for r in runs}) > 1]
    default = next((a for a in ("epoch", "samples") if a in available), "step") if differ else "step"
    why = (f"the runs differ in {' and '.join(differ)}, so their steps do not line up" if differ
           else "every run has the same world size, batch size and steps per epoch")
    text = f"x axis: {default} ({why}); epoch = step / the steps of an epoch, samples = step × batch_size × world size"
    missing = []
    for a in AXES:
        if a not in available:
            lacking = [r for r in runs if r["factors"][a] is None]
            reasons = sorted({r["reasons"].get(a, "") for r in lacking})
            named = ", ".join(f"{r['tag']}/{r['id']}" for r in lacking[:3]) + (" and others" if len(lacking) > 3 else "")
            missing.append(f"no {a} axis: {named} ({'; '.join(reasons)})")
    return default, available, text + "".join(f". {m}" for m in missing)


# ---- sections -------------------------------------------------------------------------------------

def curves_section(rows, summary, tags, swept, monitor, figures):
    labels = {row["tag"]: label_of(row, swept) for _, row in summary.iterrows()}
    pooled = rows[~rows["repeat"] & rows["tag"].isin(tags)]
    runs = [read_run(t, int(i)) for t, i in zip(pooled["tag"], pooled["id"])]
    runs = [r for r in runs if r["curves"]]
    parts = ["<h2>Curves: each tag's mean over its distinct runs ± std, its runs faint</h2>"]
    if len(summary) > len(tags):
        parts.append(f'<p class="note">the {len(tags)} best of {len(summary)} tags; make report TAGS="a b" for others</p>')
    if not runs:
        return "\n".join(parts + ['<p class="note">no curves recorded</p>']), None
    default, available, text = choose_axis(runs)
    parts.append(f'<p class="note" id=axis-note>{html.escape(text)}. Hover a line for its tag, run and value; '
                 "drag to zoom, double-click to zoom out; a click on a legend entry hides that tag in every "
                 "figure.</p>")
    parts.append('<p id=axes>' + "".join(
        f'<label><input type=radio name=axis value={a}{" checked" if a == default else ""}> {a}</label>'
        for a in available) + "</p>")
    monitor_curve = monitor.replace("_", "/", 1) if monitor else None
    for number, (title, figure) in enumerate(curve_figures(runs, [(t, labels[t]) for t in tags], monitor_curve)):
        figures.append({"id": f"curves{number}", "curves": True, **figure})
        parts.append(f'<div class="figure" id="curves{number}" title="{html.escape(title)}"></div>')
    return "\n".join(parts), (default, available)


def sweep_records(summary):
    """The sweeps with points among the list's tags: [(name, record)]."""
    tags, found = set(summary["tag"]), []
    for path in sorted(SWEEPS.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if any(p.get("tag") in tags for p in record.get("points", [])):
            found.append((record.get("name", path.stem), record))
    return found


def sweeps_section(summary, stem, higher, figures):
    if not stem:
        return ""
    by_tag = summary.set_index("tag")
    parts = []
    for name, record in sweep_records(summary):
        grid = {h: v for h, v in (record.get("grid") or {}).items() if isinstance(v, list) and len(v) > 1}
        points = [(p["tag"], p["values"], float(by_tag.loc[p["tag"], f"{stem}.mean"]),
                   float(by_tag.loc[p["tag"], f"{stem}.std"]), int(by_tag.loc[p["tag"], "count"]))
                  for p in record.get("points", []) if p.get("tag") in by_tag.index]
        if not grid or not points:
            continue
        figures.append({"id": f"sweep-{name}", **sweep_figure(name, grid, points, stem.removeprefix("metrics."), higher)})
        parts.append(f'<div class="figure" id="sweep-{html.escape(name)}"></div>')
    if not parts:
        return ""
    return ("<h2>Sweeps: the monitored metric over each sweep's grid</h2>\n"
            '<p class="note">each sweep\'s own grid (__statistic__/sweeps/), its points in this list: mean ± std '
            "over distinct runs</p>\n" + "\n".join(parts))


def media_items(folder):
    """{name: [(step, path)]} of a run's media, each name's steps in order."""
    found = {}
    media = folder / "media"
    if media.is_dir():
        for sub in sorted(p for p in media.iterdir() if p.is_dir()):
            files = [p for p in sub.iterdir() if p.stem.isdigit() and p.suffix in (".png", ".txt")]
            if files:
                found[sub.name] = sorted(((int(p.stem), p) for p in files), key=lambda item: item[0])
    return found


def media_section(rows, tags):
    """Each run's latest picture and text per name, the earlier ones a slider away."""
    budget, cards = EMBEDDED_IMAGES, {}
    for tag, number in zip(rows["tag"], rows["id"]):
        if tag not in tags:
            continue
        for name, items in media_items(results.run_dir(tag, int(number))).items():
            entries = []
            for k, (step, path) in enumerate(items):
                link = f"../../__result__/{tag}/{number}/media/{name}/{path.name}"
                latest = k == len(items) - 1
                if path.suffix == ".png":
                    size = path.stat().st_size if latest else None
                    if latest and size <= EMBEDDED_IMAGE and size <= budget:
                        budget -= size
                        link = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
                    entries.append([step, "image", link])
                elif latest or len(items) - k <= 20:  # the latest 20 texts embedded, earlier ones linked
                    entries.append([step, "text", path.read_text(errors="replace")[:TEXT_CHARS]])
                else:
                    entries.append([step, "link", link])
            cards.setdefault(name, []).append((f"{tag}/{number}", entries))
    if not cards:
        return ""
    parts = ["<h2>Media: each run's latest, the earlier ones on its slider</h2>"]
    for name, runs in sorted(cards.items(), key=lambda item: (not item[0].startswith("val_"), item[0])):
        parts.append(f"<h3>{html.escape(name)}</h3><div class=cards>")
        for run, entries in runs:
            step, kind, value = entries[-1]
            shown = (f'<img alt="{html.escape(name)} of {html.escape(run)}" src="{html.escape(value)}">' if kind == "image"
                     else f"<pre>{html.escape(value)}</pre>")
            slider = (f'<input type=range min=0 max={len(entries) - 1} value={len(entries) - 1}>'
                      if len(entries) > 1 else "")
            parts.append(f"<div class=card data-items=\"{html.escape(json.dumps(entries))}\">{html.escape(run)}, step "
                         f"<span class=step>{step}</span>{shown}{slider}</div>")
        parts.append("</div>")
    return "\n".join(parts)


def run_links(rows):
    parts = ["<h2>Runs</h2>"]
    for tag, group in rows.groupby("tag", sort=False):
        links = []
        for number, repeat in zip(group["id"], group["repeat"]):
            folder = f"../../__result__/{html.escape(tag)}/{number}"
            note = " (repeat, not pooled)" if repeat else ""
            links.append(f'{html.escape(tag)}/{number}{note}: <a href="{folder}/log">log</a> '
                         f'<a href="{folder}/statistic.json">statistic.json</a>')
        parts.append(f'<details><summary>{html.escape(tag)}: {len(links)} run{"s" if len(links) > 1 else ""}</summary>'
                     '<p class="note">'
                     + "<br>".join(links) + "</p></details>")
    return "\n".join(parts)


def plotly_js():
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def page(name, rows, summary):
    hparams = [c for c in summary.columns if c.startswith("hparams.")]
    swept = [h for h in hparams if summary[h].nunique(dropna=False) > 1]
    stem, higher, monitor = monitored(summary)
    figures = []
    ranked = summary.sort_values(f"{stem}.mean", ascending=not higher, kind="stable") if stem else summary
    tags = list(ranked["tag"])[:CURVE_TAGS]  # the best, best first: those the curves and the media show
    curves, axes = curves_section(rows, summary, tags, swept, monitor, figures)
    body = [f"<h1>Report of {html.escape(name)}</h1>",
            f'<p class="note">{len(rows)} runs, {len(summary)} tags; written {time.strftime("%Y-%m-%d %H:%M:%S")}; '
            + (f"best row: {html.escape(stem)} ({'max' if higher else 'min'}); " if stem else
               "no monitor, so no best row; ") + "mean ± std (n-1) over distinct runs "
            "(one per seed); repeats are not pooled</p>",
            summary_table(summary, swept, stem, higher), curves, sweeps_section(summary, stem, higher, figures),
            media_section(rows, set(tags)), run_links(rows)]
    default = axes[0] if axes else "step"
    script = (f"<script>{plotly_js()}</script>\n<script>const FIGURES = {to_js(figures)};"
              + SCRIPT % (to_js(list(AXES)), to_js(default)) + "</script>") if figures else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>{html.escape(name)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + f"\n{script}\n</body></html>\n")


def main(name):
    rows, summary = results.rows(name, make=False), results.summary(name, make=False)
    tags = os.environ.get("TAGS", "").split()
    path = REPORTS / f"{name}.html"
    if tags:
        missing = sorted(set(t.partition("/")[0] for t in tags) - set(summary["tag"]))
        if missing:
            raise UserError(f"tag {missing[0]} is not in list {name}: name tags of the list, or give LIST=")
        wanted = {t.partition("/")[0] for t in tags}
        rows, summary = rows[rows["tag"].isin(wanted)], summary[summary["tag"].isin(wanted)].reset_index(drop=True)
        path = REPORTS / f"{name}.tags.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, page(name, rows, summary))
    print(f"report {path}: {len(rows)} runs, {len(summary)} tags (open file://{path.resolve()})")


if __name__ == "__main__":
    run(lambda: main(list_name(env("STATISTIC_STEM") or None)))
