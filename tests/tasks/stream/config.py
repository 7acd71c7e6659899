"""A third task for the tests, in the shape of nanoGPT's train.py (yours, in a real project):
a run counted in steps (max_steps, no epochs) over a stream of random windows, the lr set by
hand each step, evaluation every eval_every steps on random batches, a throughput scalar.
"""
# data: Python's own standard-library sources, which every machine with Python has
n_files = 40  # how many of the standard library's .py files (sorted by name) make the text
val_share = 0.1  # the end of the text held out for validation

# model
block_size = 32  # context length
n_embd = 32
n_hidden = 64

# training: steps, not epochs (read by the template's loop)
max_steps = 60
eval_every = 20  # evaluate, checkpoint and maybe keep the best every eval_every steps
eval_iters = 4  # random batches an evaluation estimates the loss on
batch_size = 16
learning_rate = 0.003
warmup_steps = 10
min_lr = 0.0003
time_scalars = ["tokens_per_s"]  # measures time: a curve, left out of every exactness comparison

# bookkeeping (read by the template's loop: keep these names)
monitor = "val_loss"
monitor_mode = "min"
keep_checkpoints = None
