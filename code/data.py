"""The data (yours): scikit-learn's bundled handwritten digits (1,797 8x8 images).

prepare(cfg, folder) converts the raw data once into `folder`; make_loaders() gives training
what it reads from there. The template keeps each prepared data set in __data__/<key>/, keyed by
this file's source and the config values prepare() reads, so data is prepared again exactly
when what it depends on changes (`make data` prepares it ahead of a run).
"""
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def prepare(cfg, folder):
    """Write the data set into the empty `folder`. Read from cfg only what the data depends on:
    each value read here becomes part of the data's key."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.save(folder / "images.npy", (digits.images / 16.0).astype(np.float32))
    np.save(folder / "labels.npy", digits.target.astype(np.int64))


def split_indices(n, val_fraction, test_fraction, seed):
    """Fixed train/val/test index arrays: the same for every run of every seed."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def make_loaders(cfg, folder, generator, seed, rank=0, world_size=1):
    """(training batches, {name: evaluation batches}) from the prepared `folder`.

    The training batches may be any iterable with a length (the steps of an epoch). This one
    shuffles with `generator`, whose state the checkpoint keeps, so a continued run sees the
    same batches; with several processes each rank gets its own shard, shuffled from `seed`
    and the epoch (DistributedSampler). Evaluation shards are disjoint, so summed metrics are
    exact. Each evaluation set's metrics are named after it: val_loss, test_acc, ..."""
    images = torch.from_numpy(np.load(folder / "images.npy")).unsqueeze(1)
    dataset = TensorDataset(images, torch.from_numpy(np.load(folder / "labels.npy")))
    train, val, test = split_indices(len(dataset), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    if world_size > 1:
        sampler = DistributedSampler(Subset(dataset, train), world_size, rank, shuffle=True, seed=seed)
        train_loader = DataLoader(Subset(dataset, train), cfg.batch_size, sampler=sampler)
    else:
        train_loader = DataLoader(Subset(dataset, train), cfg.batch_size, shuffle=True, generator=generator)

    def shard(indices):
        return DataLoader(Subset(dataset, indices[rank::world_size]), 256)

    return train_loader, {"val": shard(val), "test": shard(test)}
