"""A small CNN for 8x8 digits."""
import torch
from torch import nn


def build_model(cfg):
    return nn.Sequential(nn.Conv2d(1, cfg.channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(cfg.channels * 16, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 10))


def example_input(batch=1):
    return torch.zeros(batch, 1, 8, 8)
