"""The example's data: scikit-learn's bundled handwritten digits (1,797 8x8 images).

`python code/data.py` (run by `make data`) writes them once to __data__/digits.npz;
training reads only that file, so no network and no scikit-learn at training time.
Put your own data set here: keep `prepare()` for the one-off conversion and
`make_loaders()` for what training needs.
"""
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

DATA_FILE = Path("__data__/digits.npz")


def prepare(path=DATA_FILE):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # several nodes may prepare at once
    np.savez_compressed(tmp, images=(digits.images / 16.0).astype(np.float32),
                        labels=digits.target.astype(np.int64))
    os.replace(tmp, path)


def split_indices(n, val_fraction, test_fraction, seed):
    """Fixed train/val/test index arrays: the same for every run of every seed."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def make_loaders(cfg, generator, seed, rank=0, world_size=1):
    """Train/val/test loaders. The train loader shuffles with `generator`, whose state the
    checkpoint keeps, so a continued run sees the same batches. With several processes each
    rank gets its own shard, shuffled from `seed` and the epoch (DistributedSampler); evaluation shards are disjoint so summed metrics are exact."""
    if not DATA_FILE.exists():
        sys.exit(f"error: {DATA_FILE} is missing: run `make data` from the project root")
    with np.load(DATA_FILE) as f:
        dataset = TensorDataset(torch.from_numpy(f["images"]).unsqueeze(1), torch.from_numpy(f["labels"]))
    train, val, test = split_indices(len(dataset), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    if world_size > 1:
        sampler = DistributedSampler(Subset(dataset, train), world_size, rank, shuffle=True, seed=seed)
        train_loader = DataLoader(Subset(dataset, train), cfg.batch_size, sampler=sampler)
    else:
        train_loader = DataLoader(Subset(dataset, train), cfg.batch_size, shuffle=True, generator=generator)

    def shard(indices):
        return DataLoader(Subset(dataset, indices[rank::world_size]), 256)

    return train_loader, shard(val), shard(test)


if __name__ == "__main__":
    prepare()
    print(f"wrote {DATA_FILE}")
