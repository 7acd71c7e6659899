"""Where a run starts and where it stands (the template's machinery): the checks every rank
agrees on before training (the checkpoint a continue goes on from, its seed, its data), and
the loop's position with every RNG, as one piece that a checkpoint saves (state_dict) and a
continue restores (load_state_dict).
"""
from pathlib import Path

from gitexp import contract, datastore, dist, protocol, warmstart
from gitexp.checkpoint import load_latest, rng_state, set_rng_state
from gitexp.protocol import Refused
from gitexp.record import last_fingerprint, now


def agreed(work):
    """`work()` on rank 0, its answer on every rank; a Refused there is raised on every rank
    (a rank that raised alone would leave the others waiting in the next collective)."""
    answer = refusal = None
    try:
        answer = work()
    except Refused as problem:
        refusal = str(problem)
    answer, refusal = dist.broadcast((answer, refusal))
    if refusal:
        raise Refused(refusal)
    return answer


def resuming(recorder):
    """Whether this is a recorded continue (or the launcher's look before one)."""
    return recorder.active and recorder.mode in (protocol.CONTINUE, protocol.CHECK_RESUME)


def seed_and_fix(recorder, fallback_seed):
    """The run's seed and FIX mode, as the launcher recorded them (alone: the fixed seed)."""
    if recorder.statistic:
        return recorder.statistic["seed"], recorder.statistic["fix"]
    return fallback_seed, True


def checkpoint_to_resume(recorder):
    """For a continue: (checkpoint, path, skipped) of the newest readable checkpoint; (None,
    None, []) to start again from epoch 0."""
    if not resuming(recorder):
        return None, None, []
    record, folder = recorder.statistic, recorder.exp_dir / "checkpoint"
    checkpoint, path, skipped = load_latest(folder)
    if checkpoint is None:
        if skipped:
            raise Refused(f"no readable checkpoint in {folder}: every epoch_<n>.pth failed to load")
        if record.get("epoch") or record.get("step"):  # not a silent restart
            tag, number = record["tag"], record["id"]
            raise Refused(f"{tag}/{number} is recorded at epoch {record.get('epoch')}, step {record.get('step')}, "
                          f"but {folder}/ holds no checkpoint: restore them and continue; or make rerun TAG={tag} "
                          f"ID={number}; or make rm EXP={tag}/{number}")
        return None, None, []
    return checkpoint, path, skipped


def data_refusal(recorder, data_record):
    """A continue goes on with the data its run last ran on, or not at all: the refusal, or
    None. With ACCEPT_DATA=1 (the user declares changed data the same: a re-sync, a copy) it
    goes on, and the recorder records that."""
    recorded = recorder.statistic.get("data") if resuming(recorder) else None
    if not recorded or data_record is None:
        return None
    last = last_fingerprint(recorded)
    if last == data_record["fingerprint"]:
        return None
    record = recorder.statistic
    if protocol.accepting_data():
        recorder.accepted = {"fingerprint": data_record["fingerprint"], "epoch": record.get("epoch"),
                             "step": record.get("step"), "at": now()}
        return None
    return (f"the data changed: {record['tag']}/{record['id']} ran on data {last[:12]}"
            f"{' (' + recorded['key'] + ')' if recorded.get('key') else ''}, the data here now is "
            f"{data_record['fingerprint'][:12]}: continue it only on its own data (ACCEPT_DATA=1 goes on, "
            f"recorded, where you know it is the same); make rerun TAG={record['tag']} ID={record['id']} runs it "
            "again on this data")


class Start:
    """What every rank starts from: the seed and FIX mode, the checkpoint to continue from (or a
    warm start's), the prepared data and its facts (data.py's facts(): what the model is sized
    by). Rank 0 decides, the others follow, or all refuse. `check_fits(checkpoint, path, facts)`
    refuses a checkpoint of another model."""

    def __init__(self, recorder, cfg, data_module, check_fits, seed_file, world_size):
        self.checkpoint, self.path, self.skipped = agreed(lambda: checkpoint_to_resume(recorder))
        self.refuse(self.other_world(world_size))
        self.seed, self.fix = dist.broadcast(seed_and_fix(recorder, int(Path(seed_file).read_text())))
        contract.check_config(cfg)
        self.data_dir, self.data_record = datastore.ensure(cfg, data_module)  # prepared once, then found again
        # the data's listing now, to tell at the end whether it changed under the run
        self.data_listing = datastore.listing_fingerprint(self.data_dir) \
            if self.data_dir is not None and dist.rank() == 0 else None
        agreed(lambda: self.refuse(data_refusal(recorder, self.data_record)))
        self.facts = datastore.facts(cfg, data_module, self.data_dir)  # on every rank: the same folder
        if self.checkpoint is not None:
            agreed(lambda: check_fits(self.checkpoint, self.path, self.facts))
        # a fresh start: from another experiment, if init_from says so
        self.source = agreed(lambda: warmstart.resolve(cfg, warmstart.expected())) if self.checkpoint is None else None

    def other_world(self, world_size):
        """A checkpoint inside an epoch continues only with as many processes as wrote it (its
        batches were sharded by them)."""
        if self.checkpoint is not None and self.checkpoint.get("done") and len(self.checkpoint["rng"]) != world_size:
            return (f"{self.path} was written inside an epoch by {len(self.checkpoint['rng'])} process(es), this "
                    f"continue has {world_size}: continue it as it ran (make continue without GPUS/NPROC/NNODES "
                    "takes its own)")
        return None

    @staticmethod
    def refuse(refusal):
        if refusal:
            raise Refused(refusal)


class Stateful:
    """The model, the optimizers, the schedules and every extra state the task declares: each
    object's state_dict() in a checkpoint, its load_state_dict() on a continue (the Stateful
    protocol of torch.distributed.checkpoint). The checkpoint keeps them flat: "model",
    "optimizer" (one optimizer's state, or {name: state} for several), "scheduler" (None
    without one, one's state, or a list of states for several), "extra" ({name: state}, rank
    0's: the same on every rank) and, where the task declares state that differs by rank (a
    data loader's position), "rank_extra" (every rank's {name: state}, by rank)."""

    def __init__(self, model, optimizer, schedules, extra, rank_extra, rank):
        self.model, self.optimizer, self.schedules = model, optimizer, schedules
        self.extra, self.rank_extra, self.rank = extra, rank_extra, rank

    def state_dict(self):
        """Taken by every rank together (the per-rank states are gathered)."""
        optimizer = self.optimizer
        schedules = [s.scheduler.state_dict() for s in self.schedules]
        state = {"model": self.model.state_dict(),
                 "optimizer": {name: o.state_dict() for name, o in optimizer.items()}
                 if isinstance(optimizer, dict) else optimizer.state_dict(),
                 "scheduler": schedules[0] if len(schedules) == 1 else schedules or None,
                 "extra": {name: obj.state_dict() for name, obj in self.extra.items()}}
        if self.rank_extra:
            state["rank_extra"] = dist.gather({name: obj.state_dict() for name, obj in self.rank_extra.items()})
        return state

    def load_state_dict(self, checkpoint):
        self.model.load_state_dict(checkpoint["model"])
        if isinstance(self.optimizer, dict):
            saved = checkpoint["optimizer"]
            if not (isinstance(saved, dict) and saved.keys() == self.optimizer.keys()):
                raise protocol.ConfigError(
                    f"the checkpoint holds the optimizers {sorted(saved) if isinstance(saved, dict) else 'one'}, "
                    f"configure_optimizers returns {sorted(self.optimizer)}: continue with the code that wrote it")
            for name, optimizer in self.optimizer.items():
                optimizer.load_state_dict(saved[name])
        else:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        saved = checkpoint["scheduler"]
        saved = [] if saved is None else [saved] if isinstance(saved, dict) else saved
        if len(saved) != len(self.schedules):
            raise protocol.ConfigError(f"the checkpoint holds {len(saved)} schedule(s), configure_optimizers returns "
                                       f"{len(self.schedules)}: continue with the code that wrote it")
        for schedule, state in zip(self.schedules, saved):
            schedule.scheduler.load_state_dict(state)
        contract.load_extra(self.extra, checkpoint.get("extra", {}))
        if self.rank_extra:
            by_rank = checkpoint.get("rank_extra") or [{}]
            contract.load_extra(self.rank_extra, by_rank[self.rank % len(by_rank)])  # each rank its own


class Position:
    """The loop's position (epoch, steps done in it, global step), its metrics so far and every
    RNG: what a checkpoint needs besides the model and optimizer states. Inside an epoch it
    also keeps the epoch's starting RNG, so a continue draws the same batch order, then sets
    the RNG as it was at the checkpoint."""

    EVALUATION_STATE = {"evaluations": 0, "stale": 0, "reference": None, "early_stop": None}

    def __init__(self, generator, rank):
        self.generator, self.rank = generator, rank
        self.epoch, self.done, self.step, self.best, self.last, self.seconds = 0, 0, 0, None, None, []
        # evaluations so far; of them, those since monitor last improved by more than min_delta
        # (on `reference`); why the run stopped early, once it did
        self.evaluations, self.stale, self.reference, self.early_stop = 0, 0, None, None
        self.sums, self.counted = {}, 0  # the step scalars' sums since the last evaluation
        self.epoch_rng = self.rng_at_checkpoint = None

    def state_dict(self):
        """Taken now, by every rank together (each rank's RNG is gathered)."""
        state = {"epoch": self.epoch, "done": self.done, "step": self.step, "best": self.best, "last": self.last,
                 "seconds": self.seconds, "rng": dist.gather(rng_state(self.generator))}
        state.update({name: getattr(self, name) for name in self.EVALUATION_STATE})
        if self.done or self.counted:
            state.update(epoch_rng=dist.gather(self.epoch_rng), counted=self.counted,
                         sums=dist.gather({k: float(v) for k, v in self.sums.items()}))
        return state

    def load_state_dict(self, checkpoint):
        """Restore after building the model and optimizer, whose init drew from the RNG."""
        for name in ("epoch", "step", "best", "last", "seconds"):
            setattr(self, name, checkpoint[name])
        for name, default in self.EVALUATION_STATE.items():  # a checkpoint written before them: their start
            setattr(self, name, checkpoint.get(name, default))
        self.done = checkpoint.get("done", 0)
        mine = self.rank % len(checkpoint["rng"])  # each rank its own generators
        if "sums" in checkpoint:
            self.sums, self.counted = checkpoint["sums"][mine], checkpoint.get("counted", self.done)
        if self.done:  # inside an epoch: its start's RNG now, so its batches come in the same order
            self.rng_at_checkpoint = checkpoint["rng"][mine]
            set_rng_state(checkpoint["epoch_rng"][mine], self.generator)
        else:
            set_rng_state(checkpoint["rng"][mine], self.generator)

    def judge(self, cfg):
        """After an evaluation (self.last): whether it is the best so far by cfg.monitor (without
        a monitor, the last is the best); with cfg.patience, whether monitor went `patience`
        evaluations without improving on its reference by more than cfg.min_delta."""
        self.evaluations += 1
        monitor = cfg.monitor
        if monitor is None:
            self.best = self.last
            return True
        if monitor not in self.last:
            there = ", ".join(name for name in self.last if name not in ("epoch", "step"))
            at = f"epoch {self.last['epoch']}" if "epoch" in self.last else f"step {self.last['step']}"
            raise protocol.ConfigError(f"monitor = {monitor!r} is not a metric of {at} "
                                       f"(there are: {there}): set monitor in code/config.py to one of them")
        value, sign = self.last[monitor], 1 if cfg.monitor_mode == "max" else -1
        is_best = self.best is None or sign * (value - self.best[monitor]) > 0
        if is_best:
            self.best = self.last
        patience, min_delta = getattr(cfg, "patience", 0) or 0, getattr(cfg, "min_delta", 0.0) or 0.0
        if patience:
            if self.reference is None or sign * (value - self.reference) > min_delta:
                self.reference, self.stale = value, 0
            else:
                self.stale += 1
            if self.stale >= patience and self.early_stop is None:
                self.stop_early(f"{monitor} did not improve on {self.reference:.6g} by more than {min_delta:g} in "
                                f"{patience} evaluation{'s' if patience > 1 else ''} (patience)")
        return is_best

    def stop_early(self, reason):
        self.early_stop = {"epoch": self.epoch + 1, "step": self.step, "reason": reason}

    def begin_epoch(self):
        """At an epoch's start: the RNG a checkpoint inside it restores first."""
        self.epoch_rng = rng_state(self.generator)

    def order_drawn(self):
        """The epoch's batch order is drawn: now the RNG as it was at the checkpoint."""
        if self.rng_at_checkpoint is not None:
            set_rng_state(self.rng_at_checkpoint, self.generator)
            self.rng_at_checkpoint = None

    def add(self, scalars):
        self.step, self.done, self.counted = self.step + 1, self.done + 1, self.counted + 1
        for name, value in scalars.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def train_means(self, world_size, device):
        """Each step scalar's mean over every rank's steps since the last evaluation; reset."""
        totals = dist.sum_over_ranks(list(self.sums.values()), device)
        means = {name: total / (self.counted * world_size) for name, total in zip(self.sums, totals)}
        self.sums, self.counted = {}, 0
        return means
