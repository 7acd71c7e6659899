"""Digits through a DataLoader with two workers, each image randomly shifted (the augmentation
draws from the worker's torch RNG, which the DataLoader seeds from `generator`)."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def prepare(cfg, folder):
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.save(folder / "images.npy", (digits.images / 16.0).astype(np.float32))
    np.save(folder / "labels.npy", digits.target.astype(np.int64))


class Shifted(Dataset):
    def __init__(self, images, labels, shift):
        self.images, self.labels, self.shift = images, labels, shift

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        dx, dy = torch.randint(-self.shift, self.shift + 1, (2,)).tolist()
        image = torch.roll(self.images[index], (dy, dx), dims=(1, 2))
        return image, self.labels[index]


def make_loaders(cfg, folder, generator, seed, rank=0, world_size=1):
    images = torch.from_numpy(np.load(folder / "images.npy")).unsqueeze(1)
    labels = torch.from_numpy(np.load(folder / "labels.npy"))
    order = np.random.default_rng(cfg.split_seed).permutation(len(labels))
    n_val = round(len(labels) * cfg.val_fraction)
    train, val = torch.from_numpy(order[n_val:]), torch.from_numpy(order[:n_val])
    dataset = Shifted(images[train], labels[train], cfg.shift)
    sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed) if world_size > 1 else None
    train_batches = DataLoader(dataset, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                               generator=generator, num_workers=cfg.num_workers)
    mine = val[rank::world_size]
    return train_batches, {"val": [(images[mine[i:i + 256]], labels[mine[i:i + 256]]) for i in range(0, len(mine), 256)]}
