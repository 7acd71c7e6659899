"""The HParams tab's columns in a tree that scripts/tb.py serves: one experiment summary, which
TensorBoard takes in place of the one it would compute from the runs (every scalar tag in
character order, step/* first, of which its page ticks the first five; ints shown as 32.000).
Here the monitored metric's best value and the evaluation sets' metrics come first, seed and FIX
mode are columns, and the values follow gitexp.events' convention, as each run's own session
does. Only the standard library at import: TensorBoard's protos are imported when one is written.
"""
import errno
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from cli import UserError
from names import NUMBER
from store import RESULTS, read_statistic

# a tree's folders root/~hparams-<n>: the HParams tab's experiment summary, the newest (no tag
# starts with ~, and its runs sort last)
EXPERIMENT = "~hparams-"
LIVE_COLUMN_TAGS = 20  # the live tree's columns: from the runs of the tags that gained a run last


def hparam_values(statistic):
    """A run's hparams as the HParams tab shows them (gitexp.events, which the run's own events
    file follows; imported here, not at the top: experiment.py imports this file)."""
    return loop_events().tensorboard_hparams(statistic["hparams"], statistic.get("seed"), statistic.get("fix"))


def loop_events():
    """code/gitexp/events.py, the events files the runs write: imported when first needed, not
    at the top (experiment.py imports tb.py, which imports this file, and must start fast)."""
    from gitexp import events
    return events


def hparam_infos(statistics, api_pb2):
    """One column per hparam of any run, typed as TensorBoard types the values it reads (a
    number, a bool, or else a string); `differs` puts those that differ first."""
    seen = {}
    for statistic in statistics:
        for name, value in hparam_values(statistic).items():
            seen.setdefault(name, []).append(value)
    infos = []
    for name, values in seen.items():
        kinds = {type(v) for v in values}
        info = api_pb2.HParamInfo(name=name, differs=len({json.dumps(v) for v in values}) > 1)
        if kinds == {float}:
            info.type = api_pb2.DATA_TYPE_FLOAT64
            info.domain_interval.min_value, info.domain_interval.max_value = min(values), max(values)
        elif kinds == {bool}:
            info.type = api_pb2.DATA_TYPE_BOOL
            info.domain_discrete.extend(sorted(set(values)))
        else:  # strings, or values of several kinds: TensorBoard shows a bool or number here as JSON
            info.type = api_pb2.DATA_TYPE_STRING
            info.domain_discrete.extend(dict.fromkeys(v if isinstance(v, str) else json.dumps(v) for v in values))
        infos.append(info)
    return infos


def metric_tags(statistics):
    """The HParams tab's metric columns, in the order it shows them; it ticks the first five.
    Left to itself TensorBoard lists every scalar tag in character order (step/* first). Here
    the monitored metric's best value comes first, then the evaluation sets' latest values (a
    running run has these too), every best value then every last value (each: the evaluation
    sets', the training means', the epoch), the training means and the step scalars; within
    the evaluation sets, the monitor's set and metric first. statistic.json's metric
    <set>_<name> is the curve <set>/<name> (a set named with a _ is split at its first _)."""
    keys = list(dict.fromkeys(key for statistic in statistics for when in ("best", "last")
                              for key in statistic["metrics"].get(when) or {}))
    monitors = [statistic["hparams"].get("monitor") for statistic in statistics]
    monitor = max(monitors, key=monitors.count, default=None)
    split, _, name = str(monitor).partition("_")
    evaluated = sorted((k for k in keys if "_" in k and not k.startswith("train_")),
                       key=lambda k: (not k.startswith(split + "_"), k.partition("_")[2] != name))
    trained = [k for k in keys if k.startswith("train_")]
    ordered = [*evaluated, *trained, *(k for k in keys if "_" not in k)]  # the last: epoch, step
    steps = [k.partition("_")[2] for k in trained]
    tags = [f"~best/{monitor}"] if monitor in keys else []
    tags += [*(k.replace("_", "/", 1) for k in evaluated),
             *(f"~{when}/{k}" for when in ("best", "last") for k in ordered),
             *(f"train/{n}" for n in steps), *(f"step/{n}" for n in steps)]
    return list(dict.fromkeys(tags))


def served_statistics(runs):
    """The statistic.json of each run that has begun training (its hparams recorded); one that
    cannot be read is left out (TensorBoard still shows its run)."""
    found = []
    for tag, number in runs:
        try:
            statistic = read_statistic(f"{tag}/{number}")
        except UserError:
            continue
        if isinstance(statistic.get("hparams"), dict) and statistic["hparams"] and \
                isinstance(statistic.get("metrics"), dict):
            found.append(statistic)
    return found


def write_experiment(root, runs):
    """The HParams tab's columns for the runs served under root: an experiment summary, which
    TensorBoard takes in place of the one it would compute from the runs. TensorBoard keeps the
    first summary a run gives a tag, so a new one goes in a new folder root/~hparams-<n> and
    the older ones are removed (TensorBoard forgets a run whose folder is gone). Nothing is
    written while no run has recorded a metric, nor when the newest summary is the same."""
    statistics = served_statistics(runs)
    metrics = metric_tags(statistics)
    if not metrics:
        return
    # here, not at the top: experiment.py imports this file and must start fast
    from tensorboard.plugins.hparams import api_pb2, metadata
    events = loop_events()
    experiment = api_pb2.Experiment(hparam_infos=hparam_infos(statistics, api_pb2),
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metrics])
    digest = hashlib.sha256(experiment.SerializeToString(deterministic=True)).hexdigest()[:16]
    generations = experiment_folders(root)
    if generations and any(generations[-1][1].glob(f"events.out.tfevents.*.{digest}")):
        return
    staging = Path(tempfile.mkdtemp(prefix=".hparams-", dir=root.parent))  # outside the tree until complete
    try:
        written = events.EventFile(staging, suffix=f".{digest}")
        written.summary(events.hparams_summary(metadata.EXPERIMENT_TAG, experiment=experiment), step=0)
        written.close()
        number = generations[-1][0] + 1 if generations else 0
        while True:  # a run starting at the same moment may have taken that number
            try:
                staging.rename(root / f"{EXPERIMENT}{number}")
                break
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                number += 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone once renamed
    for older, folder in experiment_folders(root):  # not a newer one that another run wrote
        if older < number:
            shutil.rmtree(folder, ignore_errors=True)


def latest_tags_runs(runs, tags=LIVE_COLUMN_TAGS):
    """The runs of the `tags` tags that gained a run last: the live tree's columns come from
    these, not from every statistic.json of years of results at each run's start."""
    latest = set(sorted({tag for tag, _ in runs}, key=lambda tag: (RESULTS / tag).stat().st_mtime)[-tags:])
    return [(tag, number) for tag, number in runs if tag in latest]


def experiment_folders(root):
    """(n, folder) of each root/~hparams-<n>, oldest first."""
    return sorted((int(p.name[len(EXPERIMENT):]), p) for p in root.glob(EXPERIMENT + "*")
                  if NUMBER.fullmatch(p.name[len(EXPERIMENT):]))
