"""A tiny character model whose vocabulary comes from the data: embedding, a GRU, a read-out."""
import torch
from torch import nn


class CharModel(nn.Module):
    def __init__(self, vocab_size, n_embd, n_hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, n_embd)
        self.rnn = nn.GRU(n_embd, n_hidden, batch_first=True)
        self.head = nn.Linear(n_hidden, vocab_size)

    def forward(self, x):
        hidden, _ = self.rnn(self.embed(x))
        return self.head(hidden)


def build_model(cfg, facts):
    return CharModel(facts["vocab_size"], cfg.n_embd, cfg.n_hidden)


def example_input(batch=1):
    return torch.zeros(batch, 8, dtype=torch.long)
