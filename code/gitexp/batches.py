"""Resuming inside an epoch (the template's machinery): the epoch's batches from a step on."""
from torch.utils.data import DataLoader

from gitexp import dist
from gitexp.protocol import ConfigError
from gitexp.stop import held


def endless(batches):
    """A run counted in steps (max_steps): its training batches as one stream, begun again from
    their start whenever they end (a finite loader), each pass told its number (set_epoch)."""
    passes = 0
    while True:
        empty = True
        with held():  # a DataLoader's workers start here: the stop signals are the loop's alone
            iterator = iter(batches)
        for batch in iterator:
            empty = False
            yield batch
        if empty:
            raise ConfigError("make_loaders' training batches are empty: a run of max_steps needs at least one batch")
        passes += 1
        dist.set_epoch(batches, passes)


def resume_at(batches, done):
    """An iterator over an epoch's batches from batch `done` on, in the order a whole epoch
    would give them (the RNG is as at the epoch's start). The skipped batches are not loaded
    where the source allows it: by its own iter_from(done), or by a DataLoader's sampler
    indices where it loads in this process; any other source is iterated past them. Whatever
    skipping draws from the RNG it draws here, before the loop sets the RNG to the checkpoint's:
    an iter_from must not put off its drawing to the first batch (no bare generator)."""
    if done == 0:
        return iter(batches)
    if hasattr(batches, "iter_from"):
        return batches.iter_from(done)
    iterator = iter(batches)
    if isinstance(batches, DataLoader) and batches.num_workers == 0 and hasattr(iterator, "_next_index"):
        for _ in range(done):
            iterator._next_index()  # the indices of a batch, without fetching its samples
        return iterator
    for _ in range(done):
        next(iterator)
    return iterator
