"""Write a list's report: `python scripts/report.py` (make report LIST=record; TAGS="a b").

__statistic__/report/<LIST>.html, one self-contained page (plots embedded as PNG, no script, no
network; it can be mailed), made from make table's files and the runs' TensorBoard events:
    - the summary: per tag (a sweep's point) the hparams that differ between tags, the distinct
      runs pooled (one per seed: count), the repeats left out, each metric's mean ± std; the
      best row (the monitored metric, hparams.monitor and monitor_mode) marked;
    - for a sweep (hparams that differ), the monitored metric against each swept hparam, with
      error bars over seeds, a log axis where the values span decades;
    - per tag, its curves (train and val, one axis per metric): the mean over its distinct runs
      with a ± std band, each run faint behind it; runs of unequal length are averaged, at each
      step, over the runs that reached it; the CURVE_TAGS best tags only, so a list of
      thousands of runs stays a page;
    - links to each run's log and statistic.json.
It is make's file target, remade only when the list's table is. With TAGS, only those tags, in
__statistic__/report/<LIST>.tags.html, made each time. Input comes from the environment.
"""
import html
import os
import time
from pathlib import Path

from cli import UserError, env, run
from gitexp import results
from gitexp.files import atomic_write
from lists import list_name

REPORTS = Path("__statistic__/report")
CURVE_TAGS = 30
STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}td:first-child,th:first-child{text-align:left}
tr.best{background:#e4f5e4;font-weight:bold}img{max-width:100%}h2{margin-top:1.6em}.note{color:#666;font-size:13px}"""


def monitored(summary):
    """The monitored metric's summary column stem (metrics.best.<monitor>) and whether higher is
    better."""
    monitor = next((m for m in summary.get("hparams.monitor", []) if isinstance(m, str)), None)
    mode = next((m for m in summary.get("hparams.monitor_mode", []) if isinstance(m, str)), "max")
    stem = f"metrics.best.{monitor}"
    if f"{stem}.mean" not in summary:
        stems = [c[:-5] for c in summary.columns if c.endswith(".mean")]
        stem = next((s for s in stems if s.startswith("metrics.best.")), stems[0] if stems else None)
    return stem, mode != "min"


def number(value, digits=4):
    return "" if value != value or value is None else format(value, f".{digits}g")


def summary_table(summary, swept, stem, higher):
    metrics = [c[:-5] for c in summary.columns if c.endswith(".mean")]
    best = (summary[f"{stem}.mean"].idxmax() if higher else summary[f"{stem}.mean"].idxmin()) if stem else None
    head = ["tag", *(h.removeprefix("hparams.") for h in swept), "count", "repeats",
            *(m.removeprefix("metrics.") for m in metrics)]
    lines = ["<table id=summary><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for index, row in summary.iterrows():
        cells = [html.escape(str(row["tag"])), *(html.escape(str(row[h])) for h in swept),
                 str(row["count"]), str(row.get("repeats", 0))]
        for m in metrics:
            mean, std = row[f"{m}.mean"], row[f"{m}.std"]
            text = number(mean) + (f" ± {number(std, 2)}" if std == std else "")
            cells.append(f'<span data-metric="{html.escape(m)}" data-mean="{mean!r}" data-std="{std!r}">{text}</span>')
        mark = ' class="best"' if index == best else ""
        lines.append(f"<tr{mark}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(lines + ["</table>"])


def sweep_section(summary, swept, stem):
    from report_plots import sweep_plot

    numeric = [h for h in swept if summary[h].dtype.kind in "if"]
    if not numeric or not stem:
        return ""
    points = summary.rename(columns={f"{stem}.mean": "mean", f"{stem}.std": "std"})
    images = [f'<img alt="{html.escape(stem)} against {html.escape(h)}" src="{sweep_plot(points, h, stem, [o for o in swept if o != h])}">'
              for h in numeric]
    return "<h2>Sweep: the monitored metric against each swept hparam</h2>\n" + "\n".join(images)


def curves_section(name, rows, summary, stem, higher):
    from report_plots import curve_plot

    ranked = summary.sort_values(f"{stem}.mean", ascending=not higher) if stem else summary
    tags = list(ranked["tag"])[:CURVE_TAGS]
    pooled = rows[~rows["repeat"] & rows["tag"].isin(tags)]
    frame = results.curves([f"{t}/{i}" for t, i in zip(pooled["tag"], pooled["id"])])
    parts = ["<h2>Curves per tag: mean over its distinct runs ± std, each run faint</h2>"]
    if len(summary) > len(tags):
        parts.append(f'<p class="note">the {len(tags)} best of {len(summary)} tags; make report TAGS="a b" for others</p>')
    stats = results.mean_curves(frame) if len(frame) else frame
    for tag in tags:
        mine = frame[frame["tag"] == tag]
        parts.append(f"<h3>{html.escape(tag)}</h3>")
        parts.append(f'<img alt="curves of {html.escape(tag)}" src="{curve_plot(tag, mine, stats[stats["tag"] == tag])}">'
                     if len(mine) else '<p class="note">no curves recorded</p>')
        parts.append(run_links(rows[rows["tag"] == tag]))
    return "\n".join(parts)


def run_links(rows):
    links = []
    for tag, number, repeat in zip(rows["tag"], rows["id"], rows["repeat"]):
        folder = f"../../__result__/{html.escape(tag)}/{number}"
        note = " (repeat, not pooled)" if repeat else ""
        links.append(f'{html.escape(tag)}/{number}{note}: <a href="{folder}/log">log</a> '
                     f'<a href="{folder}/statistic.json">statistic.json</a>')
    return '<p class="note">' + "<br>".join(links) + "</p>"


def page(name, rows, summary):
    hparams = [c for c in summary.columns if c.startswith("hparams.")]
    swept = [h for h in hparams if summary[h].nunique(dropna=False) > 1]
    stem, higher = monitored(summary)
    body = [f"<h1>Report of {html.escape(name)}</h1>",
            f'<p class="note">{len(rows)} runs, {len(summary)} tags; written {time.strftime("%Y-%m-%d %H:%M:%S")}; '
            f"best row: {html.escape(str(stem))} ({'max' if higher else 'min'}); mean ± std (n-1) over distinct runs "
            "(one per seed); repeats are not pooled</p>",
            summary_table(summary, swept, stem, higher), sweep_section(summary, swept, stem),
            curves_section(name, rows, summary, stem, higher)]
    return (f"<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>{html.escape(name)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


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
