"""The data (yours): scikit-learn's bundled handwritten digits (1,797 8x8 images).

prepare(cfg, folder) converts the raw data once into `folder`; make_loaders() gives training
what it reads from there. The template keeps each prepared data set in __data__/<key>/, keyed by
this file's source and the config values prepare() reads, so data is prepared again exactly
when what it depends on changes (`make data` prepares it ahead of a run).
"""
import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler
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


class InMemoryBatches:
    """Batches of tensors held in memory, on the GPU where there is one: each batch is one
    indexing of each tensor, with no per-sample Python and no copy from the host. The order
    comes from `batch_sampler`, exactly as a DataLoader's would; `sampler` is there for
    set_epoch."""

    def __init__(self, tensors, batch_sampler):
        self.tensors, self.batch_sampler, self.sampler = tensors, batch_sampler, batch_sampler.sampler

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, done):
        """The batches after the first `done`, whose indices alone are drawn (for a continue
        from a checkpoint inside an epoch). The order is drawn now, not at the first batch:
        the loop sets the RNG back to the checkpoint's right after."""
        order = iter(self.batch_sampler)
        for _ in range(done):
            next(order)
        return self.batches(order)

    def batches(self, order):
        for indices in order:
            index = torch.as_tensor(indices, device=self.tensors[0].device)
            yield tuple(t[index] for t in self.tensors)


def make_loaders(cfg, folder, generator, seed, rank=0, world_size=1):
    """(training batches, {name: evaluation batches}) from the prepared `folder`.

    The training batches may be any iterable with a length (the steps of an epoch). These
    shuffle with `generator`, whose state the checkpoint keeps, so a continued run sees the
    same batches; with several processes each rank gets its own shard, shuffled from `seed`
    and the epoch (DistributedSampler). The data (1.8 MB) moves to the GPU once, where there is
    one. Evaluation shards are disjoint, so summed metrics are exact. Each evaluation set's
    metrics are named after it: val_loss, test_acc, ..."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    images = torch.from_numpy(np.load(folder / "images.npy")).unsqueeze(1).to(device)
    labels = torch.from_numpy(np.load(folder / "labels.npy")).to(device)
    train, val, test = split_indices(len(labels), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    train_data = (images[torch.from_numpy(train).to(device)], labels[torch.from_numpy(train).to(device)])
    if world_size > 1:
        sampler = DistributedSampler(range(len(train)), world_size, rank, shuffle=True, seed=seed)
    else:
        sampler = RandomSampler(range(len(train)), generator=generator)
    train_batches = InMemoryBatches(train_data, BatchSampler(sampler, cfg.batch_size, drop_last=False))

    def shard(indices):
        mine = torch.from_numpy(indices[rank::world_size]).to(device)
        return [(images[mine[i:i + 256]], labels[mine[i:i + 256]]) for i in range(0, len(mine), 256)]

    return train_batches, {"val": shard(val), "test": shard(test)}
