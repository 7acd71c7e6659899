"""The report's plots (make report), drawn by matplotlib and embedded as base64 PNG, so the page
needs no network and no files beside it."""
import base64
import io
import math

import matplotlib

matplotlib.use("Agg")  # no display: a file backend, chosen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

DPI = 80


def png(figure):
    """The figure as a data: URL (and closed: a report draws many)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def spans_decades(values):
    """A log axis fits positive values whose largest is 100 times the smallest or more."""
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 100


def sweep_plot(points, hparam, metric, others):
    """The monitored metric's mean ± std (error bars over seeds) against one swept hparam;
    points: a DataFrame with the hparam, the other swept hparams, `mean` and `std`. One line
    per combination of the other swept hparams."""
    figure, axis = plt.subplots(figsize=(5, 3.4))
    groups = points.groupby(others, dropna=False, sort=True) if others else [((), points)]
    for key, group in groups:
        group = group.sort_values(hparam)
        label = ", ".join(f"{o.removeprefix('hparams.')}={v}" for o, v in zip(others, key if isinstance(key, tuple) else (key,)))
        axis.errorbar(group[hparam], group["mean"], yerr=group["std"].fillna(0), marker="o", capsize=4,
                      label=label or None)
    if spans_decades(list(points[hparam])):
        axis.set_xscale("log")
    axis.set_xlabel(hparam.removeprefix("hparams."))
    axis.set_ylabel(f"{metric.removeprefix('metrics.')} (mean ± std over seeds)")
    axis.grid(alpha=0.3)
    if others:
        axis.legend(fontsize=7)
    return png(figure)


def curve_plot(tag, frame, stats):
    """A tag's curves, one axis per metric (loss, acc, ...) with each split (train, val) in its
    colour: every run faint, the mean over runs bold with a ± std band. frame: the tag's long
    curves (id, step, name, value); stats: mean_curves of it (name, step, mean, std, n)."""
    metrics = sorted({name.rpartition("/")[2] for name in frame["name"]})
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        names = sorted(n for n in frame["name"].unique() if n.rpartition("/")[2] == metric)
        for colour, name in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], names):
            for _, run in frame[frame["name"] == name].groupby("id"):
                axis.plot(run["step"], run["value"], color=colour, alpha=0.25, linewidth=0.8)
            line = stats[stats["name"] == name]
            std = line["std"].fillna(0)
            axis.fill_between(line["step"], line["mean"] - std, line["mean"] + std, color=colour, alpha=0.2)
            axis.plot(line["step"], line["mean"], color=colour, linewidth=2, label=name)
        axis.set_title(f"{tag}: {metric}", fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return png(figure)
