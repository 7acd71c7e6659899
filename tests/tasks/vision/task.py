"""Classification with an EMA of the weights: the EMA is extra state (configure_optimizers'
"state"), saved in every checkpoint and restored on continue; evaluate measures it."""
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import config
from gitexp import media
from gitexp.dist import sum_over_ranks


def configure_optimizers(cfg, model, steps_per_epoch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    return {"optimizer": optimizer, "state": {"ema": ema}}


def train_step(model, batch, optimizer, device, state):
    x, y = (t.to(device) for t in batch)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    state["ema"].update_parameters(model)
    return {"loss": loss.detach(), "lr": config.lr}


def evaluate(model, batches, device, state):
    ema = state["ema"].module
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in batches:
        logits = ema(x.to(device))
        loss_sum += F.cross_entropy(logits, y.to(device), reduction="sum")
        correct += (logits.argmax(1) == y.to(device)).sum()
        count += len(y)
    loss_sum, correct, count = sum_over_ranks([loss_sum, correct, count], device)
    return {"loss": loss_sum / count, "acc": correct / count, "inputs": media.Image(x[:16])}  # a batch: a grid
