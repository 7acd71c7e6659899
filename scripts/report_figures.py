"""The report's figures (make report) as Plotly's JSON: traces and layouts built here as plain
dicts (plotly.graph_objects would validate each of thousands of traces) and drawn in the page by
plotly.js, embedded once. Long curves are thinned; numbers keep 5 significant digits.

Curves: one figure per metric family (`acc`: val/acc, train/acc, test/acc; `loss`: loss, a GAN's
loss_D and loss_G), the monitored one first, then the step curves' families; in each, a tag's mean
over its distinct runs in the tag's colour (the same in every figure) with a ± std band, its
single runs faint, and each curve of the family in its own dash. Every trace's x is given in a
base unit with a factor for each axis (step, epoch, samples), so the page switches axes without
another copy of the data.
"""
import json
import math
import warnings

import numpy as np

AXES = ("step", "epoch", "samples")
LINE_POINTS = 2000  # a line's points at most
RUN_POINTS = 300_000  # the faint single runs' points in all, shared between their lines
MEAN_POINTS = 400_000  # the means' points in all (a band's count twice), shared alike
DASHES = ("solid", "dot", "dash", "longdash", "dashdot", "longdashdot")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#e6550d", "#31a354", "#843c39", "#7b4173", "#3182bd", "#636363", "#8ca252",
           "#bd9e39", "#ad494a")


# ---- JSON: compact numbers, safe inside <script> ------------------------------------------------

class Numbers:
    """An array written as a JSON list of numbers with `digits` significant digits (NaN: null)."""

    def __init__(self, values, digits=5):
        self.values, self.digits = np.asarray(values, dtype=float), digits


def to_js(value):
    """value as JSON for a <script>: Numbers compact, every '<' escaped (no string ends the script)."""
    if isinstance(value, Numbers):
        form = f".{value.digits}g"
        return "[" + ",".join(format(v, form) if math.isfinite(v) else "null" for v in value.values.tolist()) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_js(str(k))}:{to_js(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_js(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    if isinstance(value, np.generic):
        value = value.item()
    return json.dumps(value).replace("<", "\\u003c")


# ---- curves ---------------------------------------------------------------------------------------

# a metric named with one of these words (d_loss, loss_G) is drawn in that word's figure
FAMILIES = {"loss", "acc", "accuracy", "err", "error", "nll", "ppl", "perplexity", "mse", "mae", "lr"}


def family(name):
    """(is a step curve, its figure's name): val/acc -> (False, acc), a GAN's train/loss_G and
    val/d_loss -> (False, loss), step/loss -> (True, loss); a metric with none of FAMILIES' words
    has its own figure."""
    split, _, metric = name.partition("/")
    words = [w for w in metric.lower().split("_") if w in FAMILIES]
    return split == "step", words[0] if words else metric


def kept(count, points):
    """The indices of at most `points` of `count` points, evenly spaced, the first and last kept."""
    return np.unique(np.linspace(0, count - 1, min(count, points)).round().astype(int))


def thinned(x, y, points):
    """At most `points` of the line (kept())."""
    if len(x) <= points:
        return x, y
    keep = kept(len(x), points)
    return x[keep], y[keep]


def mean_line(lines):
    """Mean and sample std (NaN for one run) at each x of any run, over the runs whose range holds
    it (interpolated where a run has no point at that x: runs on other axes' grids); and n."""
    if all(len(x) == len(lines[0][0]) and np.array_equal(x, lines[0][0]) for x, _ in lines):
        stack = np.vstack([y for _, y in lines])
        grid = lines[0][0]
    else:
        grid = np.unique(np.concatenate([x for x, _ in lines]))
        stack = np.vstack([np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan)
                           for x, y in lines])
    n = np.sum(~np.isnan(stack), axis=0)
    with warnings.catch_warnings():  # an x that one run alone has: its std is NaN, said here
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stack, axis=0) if len(lines) > 1 else stack[0]
        std = np.nanstd(stack, axis=0, ddof=1) if len(lines) > 1 else np.full(len(grid), np.nan)
    return grid, mean, np.where(n > 1, std, np.nan), n


def tag_unit(runs):
    """The unit a tag's mean is taken in, and the factor from it to each axis (None where the runs
    differ in it): "step" where its runs share every factor, else the epoch or samples, the first
    that every run has (its runs' steps do not line up). A run's factors are from its step."""
    factors = [r["factors"] for r in runs]
    if all(f == factors[0] for f in factors):
        return "step", factors[0]
    base = next(a for a in AXES[1:] + AXES[:1] if all(f[a] is not None for f in factors))
    ratios = {a: {None if f[a] is None else f[a] / f[base] for f in factors} for a in AXES}
    return base, {a: (next(iter(r)) if len(r) == 1 else None) for a, r in ratios.items()}


def factor_list(factors):
    return [factors[a] for a in AXES]


def curve_traces(tag, label, colour, having, name, dash, run_points, mean_points):
    """One tag's traces of one curve: its ± std band (None for one run), its runs faint (none for
    one run: it is the mean), its mean, whose legend entry the caller shows once a figure."""
    style = {"legendgroup": tag, "showlegend": False, "line": {"color": colour, "dash": dash}}
    faint = []
    for run in having if len(having) > 1 else []:
        x, y = thinned(*run["curves"][name], run_points)
        faint.append({**style, "type": "scatter", "mode": "lines", "x": Numbers(x, 7), "y": Numbers(y), "opacity": 0.3,
                      "line": {**style["line"], "width": 1}, "f": factor_list(run["factors"]),
                      "hovertemplate": f"{tag}/{run['id']}<br>{name} %{{y:.4g}}<br>{{AXIS}} %{{x:.4g}}<extra></extra>"})
    unit, factors = tag_unit(having)
    grid, mean, std, n = mean_line([(np.asarray(r["curves"][name][0], float) * r["factors"][unit],
                                     np.asarray(r["curves"][name][1], float)) for r in having])
    scale = factor_list(factors)  # from the tag's unit to each axis
    keep = kept(len(grid), mean_points)
    band = None
    if len(having) > 1 and np.isfinite(std).any():
        ok = keep[np.isfinite(std[keep])]
        band = {"type": "scatter", "mode": "lines", "fill": "toself", "legendgroup": tag, "showlegend": False,
                "hoverinfo": "skip", "line": {"width": 0}, "fillcolor": rgba(colour, 0.15), "f": scale,
                "x": Numbers(np.concatenate([grid[ok], grid[ok][::-1]]), 7),
                "y": Numbers(np.concatenate([(mean + std)[ok], (mean - std)[ok][::-1]]))}
    who = f"{tag}, mean of {len(having)} runs" if len(having) > 1 else f"{tag}/{having[0]['id']}"
    mean_trace = {**style, "type": "scatter", "mode": "lines", "name": label, "x": Numbers(grid[keep], 7),
                  "y": Numbers(mean[keep]), "f": scale, "line": {**style["line"], "width": 2.5},
                  "hovertemplate": f"{who}<br>{name} %{{y:.4g}}<br>{{AXIS}} %{{x:.4g}}<extra></extra>"}
    return band, faint, mean_trace


def curve_figures(runs, tags, monitor):
    """The curve figures: [(title, figure)]. runs: dicts with tag, id, factors {axis: factor or
    None} and curves {name: (steps, values)}; tags: [(tag, label)] in the order of their colours;
    monitor: the monitored curve's name (val/acc) or None."""
    colour = {tag: COLOURS[i % len(COLOURS)] for i, (tag, _) in enumerate(tags)}
    families = {}
    for name in sorted({name for run in runs for name in run["curves"]}):
        families.setdefault(family(name), []).append(name)
    first = family(monitor) if monitor and any(monitor in run["curves"] for run in runs) else (False, "loss")
    lines = sum(len(run["curves"]) for run in runs)
    run_points = max(50, min(LINE_POINTS, RUN_POINTS // max(lines, 1)))
    means = len({(run["tag"], name) for run in runs for name in run["curves"]})
    mean_points = max(200, min(LINE_POINTS, MEAN_POINTS // max(3 * means, 1)))
    figures = []
    for key in sorted(families, key=lambda f: (f != first, f[0], f[1])):
        curves = sorted(families[key], key=lambda n: (n != monitor, not n.startswith("val/"), n))
        dash = {name: DASHES[i % len(DASHES)] for i, name in enumerate(curves)}
        bands, faint, means = [], [], []
        for tag, label in tags:
            for name in curves:
                having = [r for r in runs if r["tag"] == tag and name in r["curves"]]
                if having:
                    band, runs_faint, mean = curve_traces(tag, label, colour[tag], having, name, dash[name], run_points,
                                                                 mean_points)
                    mean["showlegend"] = not any(m["legendgroup"] == tag for m in means)
                    bands += [band] if band else []
                    faint += runs_faint
                    means.append(mean)
        step, metric = key
        title = f"{metric}{' (each step)' if step else ''}: " + ", ".join(
            f"{name} {'—' if dash[name] == 'solid' else {'dot': '···', 'dash': '– –'}.get(dash[name], dash[name])}"
            for name in curves)
        layout = {"title": {"text": title, "font": {"size": 14}}, "height": 420,
                  "margin": {"l": 60, "r": 20, "t": 40, "b": 45}, "hovermode": "closest",
                  "xaxis": {"title": {"text": "step"}}, "yaxis": {"title": {"text": metric}},
                  "legend": {"groupclick": "togglegroup", "font": {"size": 11}}}
        figures.append((title, {"data": bands + faint + means, "layout": layout}))
    return figures


def rgba(hex_colour, alpha):
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# ---- sweeps ---------------------------------------------------------------------------------------

def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def spans_decades(values):
    """A log axis fits positive numbers whose largest is 10 times the smallest or more."""
    return all(is_number(v) and v > 0 for v in values) and max(values) / min(values) >= 10


def axis_of(name, values):
    """A layout axis for a swept hparam: log where its values span decades, categories where they
    are not numbers."""
    axis = {"title": {"text": name}}
    if spans_decades(values):
        axis.update(type="log", tickvals=list(values))  # the swept values, not log's minor ticks
    elif not all(is_number(v) for v in values):
        axis["type"] = "category"
    return axis


def shown_value(value):
    return value if is_number(value) else json.dumps(value) if not isinstance(value, str) else value


def sweep_figure(name, grid, points, metric, higher):
    """The figure of one sweep: points [(tag, values, mean, std, n)] of the list; grid {hparam:
    [values]}, the hparams with more than one value. One hparam: the metric against it with error
    bars (std over seeds); two: a line per value of the one with fewer values; more: parallel
    coordinates."""
    swept = list(grid)
    text = f"{metric} (mean ± std over seeds)"
    if len(swept) <= 2:
        x_name = max(swept, key=lambda h: len(grid[h]))
        lines = [h for h in swept if h != x_name]
        groups = {}
        for tag, values, mean, std, n in points:
            key = values[lines[0]] if lines else None
            groups.setdefault(json.dumps(key), []).append((values[x_name], mean, std, n, tag))
        data = []
        order = {json.dumps(v): i for i, v in enumerate(grid[lines[0]])} if lines else {}
        for key, members in sorted(groups.items(), key=lambda kv: order.get(kv[0], 0)):
            members.sort(key=lambda m: grid[x_name].index(m[0]) if m[0] in grid[x_name] else 0)
            label = f"{lines[0]}={shown_value(json.loads(key))}" if lines else metric
            data.append({"type": "scatter", "mode": "lines+markers", "name": label,
                         "x": [shown_value(m[0]) for m in members], "y": [m[1] for m in members],
                         "error_y": {"type": "data", "array": [0 if m[2] != m[2] else m[2] for m in members],
                                     "visible": True},
                         "customdata": [[m[4], m[3]] for m in members],
                         "hovertemplate": f"%{{customdata[0]}}<br>{x_name} %{{x}}<br>{metric} %{{y:.4g}} "
                                          "(n=%{customdata[1]})<extra></extra>"})
        layout = {"title": {"text": f"sweep {name}: {metric} against {x_name}"
                                    + (f", a line per {lines[0]}" if lines else ""), "font": {"size": 14}},
                  "height": 400, "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
                  "xaxis": axis_of(x_name, grid[x_name]), "yaxis": {"title": {"text": text}},
                  "showlegend": bool(lines)}
        return {"data": data, "layout": layout}
    dimensions = []
    for h in swept:
        values = [p[1][h] for p in points]
        if spans_decades(grid[h]):
            dimensions.append({"label": f"{h} (log)", "values": [math.log10(v) for v in values],
                               "tickvals": [math.log10(v) for v in grid[h]], "ticktext": [str(v) for v in grid[h]]})
        elif all(is_number(v) for v in grid[h]):
            dimensions.append({"label": h, "values": values, "tickvals": grid[h]})
        else:
            index = {json.dumps(v): i for i, v in enumerate(grid[h])}
            dimensions.append({"label": h, "values": [index[json.dumps(v)] for v in values],
                               "tickvals": list(range(len(grid[h]))), "ticktext": [str(shown_value(v)) for v in grid[h]]})
    means = [p[2] for p in points]
    dimensions.append({"label": metric, "values": means})
    data = [{"type": "parcoords", "dimensions": dimensions,
             "line": {"color": means, "colorscale": "Viridis", "reversescale": not higher, "showscale": True}}]
    layout = {"title": {"text": f"sweep {name}: {metric} over {', '.join(swept)} (parallel coordinates; "
                                "drag along an axis to filter)", "font": {"size": 14}, "y": 0.98, "yanchor": "top"},
              "height": 460, "margin": {"l": 70, "r": 70, "t": 110, "b": 30}}
    return {"data": data, "layout": layout}
