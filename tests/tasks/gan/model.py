"""dcgan's Generator and Discriminator as small MLPs over 2-D points, with BatchNorm as in
dcgan, held in one module (model.G, model.D) so one checkpoint holds both."""
import torch
from torch import nn


def generator(nz, nh):
    return nn.Sequential(nn.Linear(nz, nh), nn.BatchNorm1d(nh), nn.ReLU(),
                         nn.Linear(nh, nh), nn.BatchNorm1d(nh), nn.ReLU(), nn.Linear(nh, 2))


def discriminator(nh):
    return nn.Sequential(nn.Linear(2, nh), nn.LeakyReLU(0.2),
                         nn.Linear(nh, nh), nn.BatchNorm1d(nh), nn.LeakyReLU(0.2), nn.Linear(nh, 1))


class GAN(nn.Module):
    def __init__(self, nz, nh):
        super().__init__()
        self.G, self.D = generator(nz, nh), discriminator(nh)

    def forward(self, z):
        """Samples: G of the noise (the graph TensorBoard draws)."""
        return self.G(z)


def build_model(cfg):
    return GAN(cfg.nz, cfg.nh)


def example_input(batch=4):
    import config
    return torch.zeros(batch, config.nz)
