"""The task (yours): one training step, the evaluation, the optimizer and its schedule.

The loop in main.py calls these three functions; change them freely, keeping their signatures.
The config: `import config` (code/config.py, the module the loop reads), then `config.lr`.
Extra state (an EMA, a GradScaler, a counter): return it from configure_optimizers as
"state": {"name": obj} ("rank_state" for state that differs by rank); it is then saved in every
checkpoint and passed to train_step and evaluate as `state` (README, Make it yours). `make check` proves the task resumes exactly.
"""
import torch
import torch.nn.functional as F

from gitexp import media
from gitexp.dist import sum_over_ranks


def configure_optimizers(cfg, model, steps_per_epoch):
    """The optimizer, and optionally a schedule with the interval it steps at: "epoch" (after
    every epoch) or "step" (after every train_step), or Lightning's {"optimizer": o,
    "lr_scheduler": {"scheduler": s, "interval": ...}}. Return the optimizer alone where there
    is no schedule. Both states are saved in every checkpoint and restored on continue."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma)
    return {"optimizer": optimizer, "scheduler": scheduler, "interval": "epoch"}


def train_step(model, batch, optimizer, device):
    """One optimizer step on one batch. Returns the scalars to log at this step (numbers or
    0-dim tensors; any names): each becomes a TensorBoard curve step/<name>, and its mean
    over the epoch the metric train_<name>."""
    x, y = (t.to(device, non_blocking=True) for t in batch)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean(),
            "lr": optimizer.param_groups[0]["lr"]}


def evaluate(model, batches, device):
    """Metrics over one evaluation set (called in eval mode, without gradients), the same on
    every rank: each rank sees its own shard, so sums are reduced over the ranks. Beside numbers,
    pictures and texts (gitexp.media): here the confusion matrix, each true class's row of shares."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    confusion, count = 0, 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        classes = logits.size(1)
        confusion = confusion + torch.bincount(y * classes + logits.argmax(1), minlength=classes * classes)
        count += len(y)
    loss_sum, correct, count = sum_over_ranks([loss_sum.item(), correct.item(), count], device)
    counts = torch.tensor(sum_over_ranks(confusion.tolist(), device)).reshape(classes, classes)
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    return {"loss": loss_sum / count, "acc": correct / count,
            "confusion": media.Image(shares.repeat_interleave(12, 0).repeat_interleave(12, 1))}
