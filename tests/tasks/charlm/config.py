"""A second task for the tests: a tiny character-level language model (yours, in a real project).

Loss only, AdamW with a warmup + cosine schedule stepped every iteration, random batches drawn
with torch.randint (the global RNG), as nanoGPT does.
"""
# data: Python's own standard-library sources, which every machine with Python has
n_files = 60  # how many of the standard library's .py files (sorted by name) make the text
val_share = 0.1  # the end of the text held out for validation

# model
vocab_size = 128  # characters by code point; anything above 127 becomes 127
block_size = 32  # context length
n_embd = 32
n_hidden = 64

# training
epochs = 6  # read by the template's loop
steps_per_epoch = 30  # random batches per epoch
batch_size = 16
eval_batches = 4  # fixed validation batches
lr = 0.003
weight_decay = 0.01
warmup_steps = 10  # linear warmup, then cosine to min_lr_ratio * lr at the last step
min_lr_ratio = 0.1

# bookkeeping (read by the template's loop: keep these names)
monitor = "val_loss"  # the metric that picks the best epoch
monitor_mode = "min"  # lower is better
keep_checkpoints = None
