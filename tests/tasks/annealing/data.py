"""Words for a word-level language model: the first n_files of Python's standard library, split
on whitespace, as word_language_model's Corpus reads a text into a Dictionary of words.

prepare() writes tokens.npy and vocab.json; facts() reads the vocabulary's size back for the model.
"""
import collections
import json
import sysconfig
from pathlib import Path

import numpy as np
import torch


def prepare(cfg, folder):
    library = Path(sysconfig.get_paths()["stdlib"])
    sources = sorted(library.glob("*.py"))[:cfg.n_files]
    words = " ".join(path.read_text(encoding="utf-8", errors="replace") for path in sources).split()
    counts = collections.Counter(words)
    vocab = ["<unk>"] + sorted((w for w, n in counts.items() if n >= cfg.min_count), key=lambda w: (-counts[w], w))
    index = {word: i for i, word in enumerate(vocab)}
    np.save(folder / "tokens.npy", np.array([index.get(word, 0) for word in words], dtype=np.int32))
    (folder / "vocab.json").write_text(json.dumps(vocab))


def facts(cfg, folder):
    """What the model must know of the data: the vocabulary's size."""
    return {"vocab_size": len(json.loads((folder / "vocab.json").read_text()))}


class RandomBatches:
    """`steps` random windows per epoch, drawn with torch.randint from the global RNG (whose
    state every checkpoint keeps)."""

    def __init__(self, tokens, bptt, batch_size, steps):
        self.tokens, self.bptt, self.batch_size, self.steps = tokens, bptt, batch_size, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield window(self.tokens, torch.randint(len(self.tokens) - self.bptt - 1, (self.batch_size,)), self.bptt)


def window(tokens, starts, bptt):
    x = torch.stack([tokens[s:s + bptt] for s in starts.tolist()])
    y = torch.stack([tokens[s + 1:s + 1 + bptt] for s in starts.tolist()])
    return x, y


def make_loaders(cfg, folder, generator, seed, rank=0, world_size=1):
    tokens = torch.from_numpy(np.load(folder / "tokens.npy").astype(np.int64))
    split = int(len(tokens) * (1 - cfg.val_share))
    train, val = tokens[:split], tokens[split:]
    fixed = torch.Generator().manual_seed(0)  # the same validation batches for every run
    val_batches = [window(val, torch.randint(len(val) - cfg.bptt - 1, (cfg.batch_size,), generator=fixed), cfg.bptt)
                   for _ in range(cfg.eval_batches)]
    return RandomBatches(train, cfg.bptt, cfg.batch_size, cfg.steps_per_epoch), {"val": val_batches[rank::world_size]}
