"""word_language_model's training: plain SGD with gradient clipping, and after each validation
"divide lr by 4 if no improvement", done in after_evaluation with the lr kept in a declared
state (schedule = "anneal"), or Lightning's ReduceLROnPlateau monitoring val_loss ("plateau").
"""
import torch
import torch.nn.functional as F

import config
from gitexp.dist import sum_over_ranks


class Annealing:
    """The example's `lr` and `best_val_loss`, which it keeps in local variables of its loop:
    here in a state the checkpoint holds, so a continue anneals as the uninterrupted run."""

    def __init__(self, lr):
        self.lr, self.best_val = lr, None

    def state_dict(self):
        return {"lr": self.lr, "best_val": self.best_val}

    def load_state_dict(self, state):
        self.lr, self.best_val = state["lr"], state["best_val"]


def configure_optimizers(cfg, model, steps_per_epoch):
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    if cfg.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.25, patience=0)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}}
    return {"optimizer": optimizer, "state": {"annealing": Annealing(cfg.lr)}}


def train_step(model, batch, optimizer, device, state=None):
    x, y = (t.to(device) for t in batch)
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
    optimizer.step()
    return {"loss": loss.detach(), "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm}


def evaluate(model, batches, device, state=None):
    loss_sum, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    loss_sum, count = sum_over_ranks([loss_sum, count], device)
    return {"loss": loss_sum / count}


def after_evaluation(metrics, optimizer, state=None):
    """After each validation, as the example: lr / 4 where val_loss did not improve on the best."""
    annealing = (state or {}).get("annealing")
    if annealing is None:  # "plateau": the loop steps ReduceLROnPlateau with val_loss
        return
    if annealing.best_val is None or metrics["val_loss"] < annealing.best_val:
        annealing.best_val = metrics["val_loss"]
    else:
        annealing.lr /= 4.0
    for group in optimizer.param_groups:
        group["lr"] = annealing.lr
