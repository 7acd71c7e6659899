"""The model (yours): a small CNN for 8x8 grey images of handwritten digits.

The loop calls build_model(cfg), and example_input() to draw the graph in TensorBoard."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, channels, hidden, dropout, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * channels * 4 * 4, hidden), nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def build_model(cfg):
    return Net(cfg.channels, cfg.hidden, cfg.dropout)


def example_input(batch=1):
    """What the TensorBoard graph is traced with."""
    return torch.zeros(batch, 1, 8, 8)
