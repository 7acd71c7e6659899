"""nanoGPT's loop in the contract's shape: the lr computed by hand from the step count each step
(warmup, then cosine), evaluation on eval_iters random batches drawn from a generator of the
task's own, a tokens/s scalar. The step count and the evaluation generator are declared state."""
import math
import time

import torch
import torch.nn.functional as F

from gitexp.dist import sum_over_ranks


class Counter:
    """The steps taken, as nanoGPT's iter_num: kept in every checkpoint."""

    def __init__(self):
        self.steps = 0

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


class Draws:
    """A torch.Generator of the evaluation's own, kept in every checkpoint."""

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self):
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["state"])


def learning_rate(cfg, step):
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    done = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * done)) * (cfg.learning_rate - cfg.min_lr)


def configure_optimizers(cfg, model, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    return {"optimizer": optimizer, "state": {"iter": Counter(), "eval_draws": Draws(1337)}}


def train_step(model, batch, optimizer, device, state):
    import config
    began = time.perf_counter()
    lr = learning_rate(config, state["iter"].steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = (t.to(device) for t in batch)
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    state["iter"].steps += 1
    return {"loss": loss.detach(), "lr": lr, "tokens_per_s": x.numel() / max(time.perf_counter() - began, 1e-9)}


def evaluate(model, batches, device, state):
    import config
    loss_sum, count = 0.0, 0
    for _ in range(config.eval_iters):
        x, y = (t.to(device) for t in batches.draw(state["eval_draws"].generator))
        logits = model(x)
        loss_sum += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    loss_sum, count = sum_over_ranks([loss_sum, count], device)
    return {"loss": loss_sum / count}
