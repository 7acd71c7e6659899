"""Every argument of an experiment, as plain `name = value` lines (yours).

git records this file with the code, and every value here is saved as an hparam in
statistic.json and TensorBoard. Nothing is read from the command line but the tag,
the run mode and the devices (see the Makefile).
"""
# data: the split is fixed by split_seed, so runs with different seeds see the same split
val_fraction = 0.1  # share of the data held out to pick the best epoch
test_fraction = 0.2  # share held out for the reported number
split_seed = 0

# model
channels = 64  # width of the first convolution; the second has twice as many
hidden = 128  # width of the fully connected layer
dropout = 0.25

# training
epochs = 10  # read by the template's loop
batch_size = 32
lr = 0.002
weight_decay = 0.0
lr_step = 4  # StepLR: multiply lr by lr_gamma every lr_step epochs
lr_gamma = 0.5

# warm start (read by the template's loop)
init_from = None  # "x/3": start from experiment x/3's best weights; "x/3@last", "x/3@7": another epoch
init_resume = False  # with init_from: its whole training state too, training on to `epochs`
init_skip = []  # parameter names (or prefixes) init_from leaves to their fresh init, e.g. a new head

# bookkeeping (read by the template's loop: keep these names)
monitor = "val_acc"  # the metric that picks the best epoch (epoch_best.pth, metrics.best)
monitor_mode = "max"  # "max": higher is better; "min": lower is better (a loss)
keep_checkpoints = None  # epoch_<n>.pth files kept besides last/best; None keeps all
checkpoint_every = 0  # also a checkpoint every N steps inside an epoch (0: only at epoch ends)
eval_every = 0  # also evaluate every N steps (the best choice, the curves, a checkpoint); 0: at epoch ends
