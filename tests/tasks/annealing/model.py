"""word_language_model's RNNModel, small: embedding, dropout, one LSTM layer, a linear decoder
over a vocabulary whose size comes from the prepared data (data.facts)."""
import torch
from torch import nn


class WordModel(nn.Module):
    def __init__(self, vocab_size, emsize, nhid, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.rnn = nn.LSTM(emsize, nhid, batch_first=True)
        self.decoder = nn.Linear(nhid, vocab_size)

    def forward(self, x):
        output, _ = self.rnn(self.drop(self.encoder(x)))
        return self.decoder(self.drop(output))


def build_model(cfg, facts):
    return WordModel(facts["vocab_size"], cfg.emsize, cfg.nhid, cfg.dropout)


def example_input(batch=1):
    return torch.zeros(batch, 8, dtype=torch.long)
