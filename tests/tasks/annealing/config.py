"""A test task shaped like pytorch/examples' word_language_model (yours, in a real project).

A word-level LSTM language model trained with plain SGD and gradient clipping; after every
evaluation the lr is divided by 4 when val_loss did not improve ("anneal", the example's own
rule, kept in a declared state), or ReduceLROnPlateau does it ("plateau", Lightning's shape).
The vocabulary comes from the data, so the model is built from data.facts().
"""
# data: words of Python's own standard-library sources, which every machine with Python has
n_files = 10  # how many of the standard library's .py files (sorted by name) make the text
min_count = 3  # words seen fewer times are <unk>
val_share = 0.1  # the end of the text held out for validation

# model
emsize = 32  # word embedding size
nhid = 64  # LSTM hidden size
dropout = 0.2
bptt = 16  # words per sequence

# training
epochs = 6  # read by the template's loop
steps_per_epoch = 30  # random batches per epoch
batch_size = 16
eval_batches = 4  # fixed validation batches
lr = 20.0  # SGD, as the example
clip = 0.25  # gradient norm clipping
schedule = "anneal"  # "anneal": lr / 4 when val_loss did not improve (after_evaluation); "plateau": ReduceLROnPlateau

# bookkeeping (read by the template's loop: keep these names)
monitor = "val_loss"  # the metric that picks the best epoch
monitor_mode = "min"  # lower is better
patience = 0  # early stopping: evaluations without improvement before the run ends; 0: off
min_delta = 0.0  # an improvement smaller than this does not count (early stopping)
keep_checkpoints = None
