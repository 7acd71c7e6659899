"""Text for a character-level language model: the first n_files of Python's standard library."""
import sysconfig
from pathlib import Path

import numpy as np
import torch


def prepare(cfg, folder):
    library = Path(sysconfig.get_paths()["stdlib"])
    sources = sorted(library.glob("*.py"))[:cfg.n_files]
    text = "".join(path.read_text(encoding="utf-8", errors="replace") for path in sources)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    np.save(folder / "tokens.npy", np.minimum(codes, 127).astype(np.uint8))


class RandomBatches:
    """`steps` random windows per epoch, drawn with torch.randint from the global RNG (whose
    state every checkpoint keeps): no sampler, no DataLoader."""

    def __init__(self, tokens, block_size, batch_size, steps):
        self.tokens, self.block_size, self.batch_size, self.steps = tokens, block_size, batch_size, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield window(self.tokens, torch.randint(len(self.tokens) - self.block_size - 1, (self.batch_size,)),
                         self.block_size)


def window(tokens, starts, block_size):
    x = torch.stack([tokens[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([tokens[s + 1:s + 1 + block_size] for s in starts.tolist()])
    return x, y


def make_loaders(cfg, folder, generator, seed, rank=0, world_size=1):
    tokens = torch.from_numpy(np.load(folder / "tokens.npy").astype(np.int64))
    split = int(len(tokens) * (1 - cfg.val_share))
    train, val = tokens[:split], tokens[split:]
    fixed = torch.Generator().manual_seed(0)  # the same validation batches for every run
    val_batches = [window(val, torch.randint(len(val) - cfg.block_size - 1, (cfg.batch_size,), generator=fixed),
                          cfg.block_size) for _ in range(cfg.eval_batches)]
    return (RandomBatches(train, cfg.block_size, cfg.batch_size, cfg.steps_per_epoch),
            {"val": val_batches[rank::world_size]})
