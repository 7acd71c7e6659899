"""Points of a fixed mixture of gaussians on a circle, drawn once into points.npy (dcgan reads
an image folder; 2-D points keep the test to a second)."""
import numpy as np
import torch


def prepare(cfg, folder):
    rng = np.random.default_rng(cfg.data_seed)
    angles = 2 * np.pi * rng.integers(cfg.n_modes, size=cfg.n_points) / cfg.n_modes
    centres = cfg.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    np.save(folder / "points.npy", (centres + cfg.spread * rng.standard_normal((cfg.n_points, 2))).astype(np.float32))


class RandomBatches:
    """`steps` batches of random points per epoch, drawn with torch.randint from the global RNG
    (every rank its own: the loop seeds each rank differently)."""

    def __init__(self, points, batch_size, steps):
        self.points, self.batch_size, self.steps = points, batch_size, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.points[torch.randint(len(self.points), (self.batch_size,))]


def make_loaders(cfg, folder, generator, seed, rank=0, world_size=1):
    points = torch.from_numpy(np.load(folder / "points.npy"))
    train, val = points[:-cfg.n_val], points[-cfg.n_val:]
    # every rank evaluates the whole validation set: it is small, and the ranks' models are equal
    return RandomBatches(train, cfg.batch_size, cfg.steps_per_epoch), {"val": [val]}
