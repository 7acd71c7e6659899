"""One pass over the data: training and evaluation."""
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm


def _global(loss_sum, correct, count, device):
    """Loss and accuracy over every rank's samples (exact: sums, not means, are reduced)."""
    sums = torch.tensor([loss_sum, correct, count], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    loss_sum, correct, count = sums.tolist()
    return {"loss": loss_sum / count, "acc": correct / count}


def train_epoch(model, loader, optimizer, device, on_step=None, progress=False, desc="train"):
    """Train one epoch; `on_step(loss)` is called after every optimizer step."""
    model.train()
    loss_sum, correct, count = 0.0, 0, 0
    # disable is left to tqdm's default where a bar is wanted, so TQDM_DISABLE=1 can still hide it
    bar = {} if progress else {"disable": True}
    for x, y in tqdm(loader, desc=desc, leave=False, file=sys.stderr, **bar):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        loss_sum += loss_value * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
        if on_step is not None:
            on_step(loss_value)
    return _global(loss_sum, correct, count, device)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    return _global(loss_sum, correct, count, device)
