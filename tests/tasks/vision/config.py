"""A third task for the tests, shaped like a real vision task (yours, in a real project): a
DataLoader with worker processes and random augmentation, an EMA of the weights, evaluation
every eval_every steps."""
# data: scikit-learn's digits, as the example's
val_fraction = 0.2  # share held out to pick the best evaluation
split_seed = 0

# model
channels = 8
hidden = 32

# training
epochs = 3  # read by the template's loop
batch_size = 64
num_workers = 2  # DataLoader worker processes: the augmentation runs there
shift = 1  # random translation by up to this many pixels, per image
lr = 0.003
ema_decay = 0.9  # the evaluated weights: an exponential moving average of the trained ones

# bookkeeping (read by the template's loop: keep these names)
monitor = "val_acc"
monitor_mode = "max"
keep_checkpoints = None
checkpoint_every = 0
eval_every = 7  # evaluation, the best choice and a checkpoint every 7 steps
