"""Characters of Python's standard library as one stream of random windows, as nanoGPT's
get_batch draws them: no epochs, no order to keep, each batch drawn from the global RNG."""
import json
import sysconfig
from pathlib import Path

import numpy as np
import torch


def prepare(cfg, folder):
    library = Path(sysconfig.get_paths()["stdlib"])
    text = "".join(path.read_text(encoding="utf-8", errors="replace")
                   for path in sorted(library.glob("*.py"))[:cfg.n_files])
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    np.save(folder / "tokens.npy", np.array([index[c] for c in text], dtype=np.int16))
    (folder / "meta.json").write_text(json.dumps({"vocab_size": len(chars)}))


def facts(cfg, folder):
    """The vocabulary's size, which sizes the model (nanoGPT's meta.pkl)."""
    return json.loads((folder / "meta.json").read_text())


class Windows:
    """Random windows of `tokens`, forever: `draw()` is one batch (x, y)."""

    def __init__(self, tokens, block_size, batch_size):
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size

    def draw(self, generator=None):
        starts = torch.randint(len(self.tokens) - self.block_size - 1, (self.batch_size,), generator=generator)
        x = torch.stack([self.tokens[s:s + self.block_size] for s in starts.tolist()])
        y = torch.stack([self.tokens[s + 1:s + 1 + self.block_size] for s in starts.tolist()])
        return x, y

    def __iter__(self):
        while True:
            yield self.draw()


def make_loaders(cfg, folder, generator, seed, rank=0, world_size=1):
    tokens = torch.from_numpy(np.load(folder / "tokens.npy").astype(np.int64))
    split = int(len(tokens) * (1 - cfg.val_share))
    return (Windows(tokens[:split], cfg.block_size, cfg.batch_size),
            {"val": Windows(tokens[split:], cfg.block_size, cfg.batch_size)})
