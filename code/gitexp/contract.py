"""What the loop expects back from your functions (the template's machinery): each answer read
in one place, so a wrong shape is one line naming the fix, not a crash an epoch later.
"""
import inspect

import torch

from gitexp.media import is_medium, prepared
from gitexp.protocol import ConfigError

SCHEDULE_KEYS = {"scheduler", "interval", "frequency", "monitor"}  # of Lightning's lr_scheduler dict: all obeyed
ANSWER_KEYS = {"optimizer", "scheduler", "lr_scheduler", "interval", "frequency", "monitor", "state", "rank_state"}


class Schedule:
    """One schedule and when the loop steps it: after every `frequency`-th step ("step") or
    epoch ("epoch"); with `monitor`, with that metric after the evaluations (at an epoch's end
    for "epoch", every evaluation for "step")."""

    def __init__(self, scheduler, interval="epoch", frequency=1, monitor=None):
        self.scheduler, self.interval, self.frequency, self.monitor = scheduler, interval, frequency, monitor

    def step(self, metrics=None):
        if self.monitor is None:
            self.scheduler.step()
        else:
            self.scheduler.step(metrics[self.monitor])


def check_config(cfg):
    """The values the loop itself reads, checked before training starts."""
    needed = ("monitor", "keep_checkpoints") + (("monitor_mode",) if getattr(cfg, "monitor", None) else ())
    for name in needed:
        if not hasattr(cfg, name):
            raise ConfigError(f"code/config.py has no `{name} = ...` line: the loop needs it (see README, Make it yours)")
    epochs, max_steps = getattr(cfg, "epochs", None), getattr(cfg, "max_steps", None)
    if (epochs is None) == (max_steps is None):
        raise ConfigError("code/config.py needs one of `epochs = n` (passes over the training batches) and "
                          f"`max_steps = n` (steps over a stream of batches), not {'both' if epochs else 'neither'}")
    for name, value in (("epochs", epochs), ("max_steps", max_steps)):
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{name} = {value!r} in code/config.py is not a whole number from 1")
    if cfg.monitor is not None and cfg.monitor_mode not in ("min", "max"):
        raise ConfigError(f"monitor_mode = {cfg.monitor_mode!r} in code/config.py is neither 'min' nor 'max': "
                          "say whether a lower or a higher monitor is better")
    for name in ("eval_every", "checkpoint_every", "patience"):
        value = getattr(cfg, name, 0)
        if not (value is None or isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ConfigError(f"{name} = {value!r} in code/config.py is not a number of "
                              f"{'evaluations' if name == 'patience' else 'steps'}: 0 for none")
    if getattr(cfg, "patience", 0) and cfg.monitor is None:
        raise ConfigError("patience in code/config.py stops a run whose monitor stops improving, and monitor = None: "
                          "set monitor (and monitor_mode), or patience = 0")
    if not isinstance(getattr(cfg, "min_delta", 0.0), (int, float)) or getattr(cfg, "min_delta", 0.0) < 0:
        raise ConfigError(f"min_delta = {cfg.min_delta!r} in code/config.py is not a number >= 0: the improvement "
                          "of monitor that resets patience")
    timed = getattr(cfg, "time_scalars", None) or []
    if not (isinstance(timed, (list, tuple)) and all(isinstance(name, str) for name in timed)):
        raise ConfigError(f"time_scalars = {timed!r} in code/config.py is not a list of train_step's scalar names "
                          "(those that measure time: tokens_per_s, mfu)")


def is_stateful(obj):
    """The Stateful protocol of torch.distributed.checkpoint: what a checkpoint can hold."""
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def optimizers(answer):
    """configure_optimizers' answer as (optimizer: one, or {name: optimizer}; [Schedule];
    {name: extra stateful object}; {name: per-rank stateful object}). Accepted: the optimizer
    alone; {"optimizer", "scheduler", "interval", "frequency", "monitor", "state",
    "rank_state"}; Lightning's {"optimizer", "lr_scheduler"}. A schedule is a scheduler, a dict
    {"scheduler", "interval", "frequency", "monitor"} or a list of those. Any other key is an
    error: a key the loop ignored would be a schedule never stepped nor saved."""
    if not isinstance(answer, dict):
        answer = {"optimizer": answer}
    unknown = sorted(set(answer) - ANSWER_KEYS)
    if unknown or "optimizer" not in answer or ("scheduler" in answer and "lr_scheduler" in answer):
        raise ConfigError(f"configure_optimizers returned the keys {sorted(answer)}: return {{'optimizer': o}} with "
                          "'scheduler' (or Lightning's 'lr_scheduler'), 'interval', 'frequency', 'monitor', 'state' "
                          "and 'rank_state', nothing else")
    optimizer = answer["optimizer"]
    named = optimizer if isinstance(optimizer, dict) else {"optimizer": optimizer}
    bad = [name for name, o in named.items() if not (is_stateful(o) and hasattr(o, "param_groups"))]
    if bad or not named:
        raise ConfigError(f"configure_optimizers' optimizer {bad or '{}'} is not a torch optimizer: return one, or "
                          "{'name': optimizer, ...} for several")
    given = answer.get("scheduler", answer.get("lr_scheduler"))
    defaults = {key: answer[key] for key in ("interval", "frequency", "monitor") if key in answer}
    schedules = [schedule(item, defaults) for item in (given if isinstance(given, (list, tuple)) else [given])
                 if item is not None]
    state, rank_state = (stateful(answer, key) for key in ("state", "rank_state"))
    if set(state) & set(rank_state):
        raise ConfigError(f"configure_optimizers names {sorted(set(state) & set(rank_state))} in both 'state' and "
                          "'rank_state': give each object one name")
    return optimizer, schedules, state, rank_state


def schedule(item, defaults):
    """One schedule of configure_optimizers' answer, checked: a scheduler or Lightning's dict."""
    if isinstance(item, dict):
        unknown = sorted(set(item) - SCHEDULE_KEYS)
        if unknown or "scheduler" not in item:
            raise ConfigError(f"configure_optimizers' schedule has the keys {sorted(item)}: the loop obeys "
                              f"{sorted(SCHEDULE_KEYS)} ('scheduler' needed)")
        item = defaults | item
    else:
        item = defaults | {"scheduler": item}
    interval, frequency, monitor = item.get("interval", "epoch"), item.get("frequency", 1), item.get("monitor")
    if interval not in ("step", "epoch"):
        raise ConfigError(f"configure_optimizers returned interval {interval!r}: use 'step' or 'epoch'")
    if not (isinstance(frequency, int) and not isinstance(frequency, bool) and frequency >= 1):
        raise ConfigError(f"configure_optimizers returned frequency {frequency!r}: a number of "
                          f"{interval}s from 1")
    if not callable(getattr(item["scheduler"], "step", None)) or not is_stateful(item["scheduler"]):
        raise ConfigError(f"configure_optimizers' scheduler {type(item['scheduler']).__name__} has no step(), "
                          "state_dict() and load_state_dict(): return a torch.optim.lr_scheduler")
    if monitor is None and needs_metric(item["scheduler"]):
        raise ConfigError(f"{type(item['scheduler']).__name__}.step() takes a metric: return "
                          "{'optimizer': o, 'lr_scheduler': {'scheduler': s, 'monitor': 'val_loss'}} and the loop "
                          "steps it with that metric after each evaluation")
    if monitor is not None and not isinstance(monitor, str):
        raise ConfigError(f"configure_optimizers returned monitor {monitor!r}: a metric's name, e.g. 'val_loss'")
    return Schedule(item["scheduler"], interval, frequency, monitor)


def needs_metric(scheduler):
    """Whether scheduler.step() has a parameter without a default (ReduceLROnPlateau's metrics)."""
    try:
        parameters = inspect.signature(scheduler.step).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def takes_facts(build_model):
    """Whether build_model takes the data's facts beside cfg: build_model(cfg, facts)."""
    try:
        return len(inspect.signature(build_model).parameters) >= 2
    except (TypeError, ValueError):
        return False


def check_takes_state(functions):
    """With "state" declared, each function the loop passes it to names a `state` parameter."""
    for function in functions:
        if function is not None and "state" not in keywords(function, state=None):
            raise ConfigError(f"configure_optimizers declares \"state\", and {function.__name__}() takes none: add "
                              f"the parameter, def {function.__name__}(..., state): the loop passes it to "
                              "train_step, evaluate and after_evaluation")


def named_optimizers(optimizer):
    """{name: optimizer}: several as the task named them, one as "optimizer"."""
    return optimizer if isinstance(optimizer, dict) else {"optimizer": optimizer}


def keywords(function, **offered):
    """Of the keywords offered, those `function`'s signature names (evaluate's split and step)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return offered
    return {name: value for name, value in offered.items() if name in parameters}


def stateful(answer, key):
    """answer[key], checked: a dict of objects a checkpoint can hold."""
    state = answer.get(key) or {}
    bad = [name for name, obj in state.items() if not is_stateful(obj)] if isinstance(state, dict) else [key]
    if bad or set(state) & {"optimizer", "scheduler"}:
        raise ConfigError(f"configure_optimizers' {key} {bad or sorted(state)} is not a dict of objects with "
                          "state_dict() and load_state_dict() (named other than optimizer and scheduler)")
    return state


def floats(metrics, who, media=None):
    """A dict of metrics (numbers or one-element tensors) as floats, for statistic.json. Where
    `media` is a dict (evaluate's answer), its gitexp.media.Image and Text go there instead,
    ready to record (gitexp.media.prepared); a bad one is one line naming its key."""
    if not isinstance(metrics, dict):
        raise ConfigError(f"{who} returned {type(metrics).__name__}, not a dict of metrics: return {{'loss': ...}}")
    answer = {}
    for name, value in metrics.items():
        if media is not None and is_medium(value):
            media[name] = prepared(value, name)
            continue
        try:
            answer[name] = float(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ConfigError(f"{who} returned {name!r} that is not a number ({str(error).splitlines()[0]}): "
                              "return numbers or 0-dim tensors"
                              + (", or a picture or text as gitexp.media.Image(...) or media.Text(...)"
                                 if media is not None else "")) from None
    return answer


def eval_sets(sets):
    """make_loaders' evaluation sets, checked: their metrics are named <set>_<metric>."""
    if not isinstance(sets, dict):
        raise ConfigError(f"make_loaders returned {type(sets).__name__} for the evaluation sets: "
                          "return (train_batches, {'val': batches, ...})")
    if "train" in sets:
        raise ConfigError("make_loaders returned an evaluation set named 'train', whose metrics would overwrite "
                          "the training means (train_loss, ...): name it otherwise, e.g. 'train_eval'")
    return sets


def on_device(example, device):
    """example_input()'s answer (a tensor, a tuple of them or a dict) on `device`."""
    if torch.is_tensor(example):
        return example.to(device)
    if isinstance(example, dict):
        return {name: on_device(value, device) for name, value in example.items()}
    if isinstance(example, (list, tuple)):
        return tuple(on_device(value, device) for value in example)
    return example


def load_extra(extra, saved):
    """Restore each extra state configure_optimizers declared from a checkpoint's "extra"."""
    missing = sorted(set(extra) - set(saved))
    if missing:
        raise ConfigError(f"the checkpoint holds no state {missing} (configure_optimizers declares it now, "
                          "not when the checkpoint was written): continue with the code that wrote it")
    for name, obj in extra.items():
        obj.load_state_dict(saved[name])
