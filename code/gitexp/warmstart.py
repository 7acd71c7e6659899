"""Warm starts from another experiment (the template's machinery), as config.py says:

    init_from = "x/3"       experiment x/3's best checkpoint ("x/3@last", "x/3@7": another epoch)
    init_resume = False     True: its whole training state too (optimizer, schedule, epoch counter,
                            every RNG): the new experiment trains on from there to this `epochs`
    init_skip = []          parameter names (or prefixes) left to their fresh init (a new head)

Without init_resume only the weights are loaded, into a run that starts at epoch 0 with a fresh
optimizer and schedule. The source's epoch and its checkpoint's sha256 are recorded, so a rerun
starts from the same bytes or is refused.
"""
import hashlib
import os

from gitexp import protocol
from gitexp.checkpoint import load_checkpoint
from gitexp.layout import EPOCH_FILE, SOURCE, STEP_FILE, experiment_folder
from gitexp.protocol import Refused


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected():
    """What a rerun must start from (the launcher's protocol.environment init): {"epoch",
    "sha256"}, or None."""
    return protocol.init_expected()


def resolve(cfg, must_match=None):
    """None without init_from; else the source checkpoint as {"experiment", "epoch", "file",
    "sha256", "resume"}, checked to exist (and, for a rerun, to be the same bytes)."""
    spec = getattr(cfg, "init_from", None)
    if spec is None:
        return None
    match = SOURCE.fullmatch(spec) if isinstance(spec, str) else None
    if not match:
        raise Refused(f"init_from = {spec!r} in code/config.py is not \"tag/id\", \"tag/id@last\" or \"tag/id@<epoch>\"")
    tag, number, which = match[1], match[2], match[3] or "best"
    folder = experiment_folder(tag, number)
    if not (folder / "statistic.json").is_file():
        raise Refused(f"init_from = {spec!r}: there is no experiment {tag}/{number} (make ls TAG={tag} shows its ids)")
    checkpoints = folder / "checkpoint"
    if must_match is not None:
        name = f"epoch_{must_match['epoch']}.pth"
    elif which in ("best", "last"):
        link = checkpoints / f"epoch_{which}.pth"
        if not link.is_symlink():
            raise Refused(f"init_from = {spec!r}: {tag}/{number} has no epoch_{which}.pth yet")
        name = os.readlink(link)
    else:
        name = f"epoch_{which}.pth"
    path = checkpoints / name
    if STEP_FILE.fullmatch(name):
        raise Refused(f"init_from = {spec!r}: the {which} of {tag}/{number} is {name}, inside an epoch (eval_every): "
                      "a warm start names an epoch's end: use @last or @<epoch>")
    if not path.is_file() or not EPOCH_FILE.fullmatch(name):
        kept = sorted((p.name for p in checkpoints.glob("epoch_[0-9]*.pth")), key=lambda n: int(n[6:-4]))
        raise Refused(f"init_from = {spec!r}: there is no {path} (kept there: {', '.join(kept) or 'none'})")
    source = {"experiment": f"{tag}/{number}", "epoch": int(EPOCH_FILE.fullmatch(name)[1]), "file": str(path),
              "sha256": sha256(path), "resume": bool(getattr(cfg, "init_resume", False))}
    if must_match is not None and source["sha256"] != must_match["sha256"]:
        raise Refused(f"init_from = {spec!r}: {path} changed since the original run started from it "
                      f"(sha256 {must_match['sha256'][:12]} then, {source['sha256'][:12]} now): a rerun would not "
                      "start from the same weights")
    return source


def skipped(name, cfg):
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in getattr(cfg, "init_skip", []) or [])


def source_weights(source, model, cfg):
    """The source's parameters this model takes: every one of its own but those init_skip names,
    checked to exist there with the same shape."""
    state = load_checkpoint(source["file"])["model"]
    own = model.state_dict()
    for name, tensor in own.items():
        if skipped(name, cfg):
            continue
        if name not in state:
            raise Refused(f"init_from {source['experiment']}: it has no parameter {name}: "
                          f"list {name!r} in init_skip to train it afresh")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise Refused(f"init_from {source['experiment']}: parameter {name} is {tuple(state[name].shape)} there "
                          f"and {tuple(tensor.shape)} here: list {name!r} in init_skip to train it afresh")
    return {name: state[name] for name in own if not skipped(name, cfg)}


def load(source, model, cfg):
    """Apply the source to a freshly built model. Returns its whole checkpoint where
    init_resume asks to train on from it (to be restored as a continue restores one), else None."""
    weights = source_weights(source, model, cfg)
    if not source["resume"]:
        model.load_state_dict(weights, strict=False)
        return None
    if getattr(cfg, "init_skip", None):
        raise Refused("init_resume = True takes the source's whole state: it cannot skip parameters (init_skip)")
    return load_checkpoint(source["file"])


def note_epochs(source, checkpoint, cfg, rank):
    """An init_resume that trains to another `epochs` than its source's: say what that changes."""
    if source is None or not source["resume"] or rank != 0:
        return
    theirs = checkpoint["hparams"].get("epochs")
    if theirs != getattr(cfg, "epochs", None):
        print(f"note: {source['experiment']} ran with epochs = {theirs}, this run goes on to epochs = "
              f"{getattr(cfg, 'epochs', None)}: "
              "a schedule computed from epochs (cosine to the end, say) now follows the new total from here on, "
              "so it differs from the source's")
