"""What the loop expects back from your functions (the template's machinery): each answer read
in one place, so a wrong shape is one line naming the fix, not a crash an epoch later.
"""
import torch

from gitexp.protocol import ConfigError

SCHEDULER_KEYS = {"scheduler", "interval"}  # of Lightning's lr_scheduler dict, the keys the loop obeys


def check_config(cfg):
    """The values the loop itself reads, checked before training starts."""
    for name in ("epochs", "monitor", "monitor_mode", "keep_checkpoints"):
        if not hasattr(cfg, name):
            raise ConfigError(f"code/config.py has no `{name} = ...` line: the loop needs it (see README, Make it yours)")
    if cfg.monitor_mode not in ("min", "max"):
        raise ConfigError(f"monitor_mode = {cfg.monitor_mode!r} in code/config.py is neither 'min' nor 'max': "
                          "say whether a lower or a higher monitor is better")
    for name in ("eval_every", "checkpoint_every"):
        value = getattr(cfg, name, 0)
        if not (value is None or isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ConfigError(f"{name} = {value!r} in code/config.py is not a number of steps: 0 for none")


def is_stateful(obj):
    """The Stateful protocol of torch.distributed.checkpoint: what a checkpoint can hold."""
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def optimizers(answer):
    """configure_optimizers' answer as (optimizer, scheduler or None, "step" or "epoch",
    {name: extra stateful object}, {name: per-rank stateful object}). Accepted: the optimizer
    alone; {"optimizer", "scheduler", "interval", "state", "rank_state"}; Lightning's
    {"optimizer", "lr_scheduler": scheduler or {"scheduler", "interval"}}. Any other key is an
    error: a key the loop ignored would be a schedule never stepped nor saved."""
    if not isinstance(answer, dict):
        answer = {"optimizer": answer}
    unknown = sorted(set(answer) - {"optimizer", "scheduler", "interval", "lr_scheduler", "state", "rank_state"})
    if unknown or "optimizer" not in answer or ("scheduler" in answer and "lr_scheduler" in answer):
        raise ConfigError(f"configure_optimizers returned the keys {sorted(answer)}: return {{'optimizer': o}} with "
                          "'scheduler' and 'interval' (or Lightning's 'lr_scheduler'), 'state' and 'rank_state', "
                          "nothing else")
    scheduler, interval = answer.get("scheduler"), answer.get("interval", "epoch")
    if "lr_scheduler" in answer:
        scheduler = answer["lr_scheduler"]
        if isinstance(scheduler, dict):
            unknown = sorted(set(scheduler) - SCHEDULER_KEYS)
            if unknown or "scheduler" not in scheduler:
                raise ConfigError(f"configure_optimizers' lr_scheduler has the keys {sorted(scheduler)}: the loop "
                                  "obeys only 'scheduler' and 'interval' (step the schedule yourself in train_step "
                                  "for anything else)")
            scheduler, interval = scheduler["scheduler"], scheduler.get("interval", "epoch")
    if interval not in ("step", "epoch"):
        raise ConfigError(f"configure_optimizers returned interval {interval!r}: use 'step' or 'epoch'")
    state, rank_state = (stateful(answer, key) for key in ("state", "rank_state"))
    if set(state) & set(rank_state):
        raise ConfigError(f"configure_optimizers names {sorted(set(state) & set(rank_state))} in both 'state' and "
                          "'rank_state': give each object one name")
    return answer["optimizer"], scheduler, interval, state, rank_state


def stateful(answer, key):
    """answer[key], checked: a dict of objects a checkpoint can hold."""
    state = answer.get(key) or {}
    bad = [name for name, obj in state.items() if not is_stateful(obj)] if isinstance(state, dict) else [key]
    if bad or set(state) & {"optimizer", "scheduler"}:
        raise ConfigError(f"configure_optimizers' {key} {bad or sorted(state)} is not a dict of objects with "
                          "state_dict() and load_state_dict() (named other than optimizer and scheduler)")
    return state


def floats(metrics, who):
    """A dict of metrics (numbers or one-element tensors) as floats, for statistic.json."""
    if not isinstance(metrics, dict):
        raise ConfigError(f"{who} returned {type(metrics).__name__}, not a dict of metrics: return {{'loss': ...}}")
    try:
        return {name: float(value) for name, value in metrics.items()}
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigError(f"{who} returned a value that is not a number ({str(error).splitlines()[0]}): "
                          "return numbers or 0-dim tensors") from None


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
