"""Next-character prediction: loss only; AdamW with warmup + cosine, stepped every iteration."""
import math

import torch
import torch.nn.functional as F

from gitexp import media
from gitexp.dist import sum_over_ranks


def configure_optimizers(cfg, model, steps_per_epoch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch

    def factor(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        done = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "scheduler": scheduler, "interval": "step"}


def train_step(model, batch, optimizer, device):
    x, y = (t.to(device) for t in batch)
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    return {"loss": loss.detach(), "lr": lr, "grad_norm": grad_norm}


def evaluate(model, batches, device):
    loss_sum, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    loss_sum, count = sum_over_ranks([loss_sum, count], device)
    return {"loss": loss_sum / count, "sample": media.Text(generated(model, "def ", 40, device))}


def generated(model, prompt, length, device):
    """`length` characters after `prompt`, each the most likely (no RNG drawn), one GRU step each."""
    codes = [ord(c) for c in prompt]
    out, hidden = model.rnn(model.embed(torch.tensor([codes], device=device)))
    for _ in range(length):
        codes.append(int(model.head(out[0, -1]).argmax()))
        out, hidden = model.rnn(model.embed(torch.tensor([codes[-1:]], device=device)), hidden)
    return "".join(chr(c) for c in codes)
