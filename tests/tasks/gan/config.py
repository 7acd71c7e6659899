"""A test task shaped like pytorch/examples' dcgan, tiny (yours, in a real project).

A generator and a discriminator, small MLPs with BatchNorm, learn a fixed mixture of gaussians
in the plane; two Adam optimizers, a D step then a G step on every batch. No metric says which
epoch is best (monitor = None): the last one is the result.
"""
# data: points around a circle, one gaussian per mode, drawn once by prepare() from data_seed
n_modes = 8
radius = 2.0
spread = 0.05  # each gaussian's standard deviation
n_points = 2048
n_val = 256  # the last n_val points: the validation set of real points
data_seed = 0

# model
nz = 8  # size of the latent noise
nh = 64  # hidden width of G and D

# training
epochs = 6  # read by the template's loop
steps_per_epoch = 40  # random batches per epoch
batch_size = 64
lr = 0.001  # Adam, both networks
beta1 = 0.5  # as dcgan

# bookkeeping (read by the template's loop: keep these names)
monitor = None  # no metric picks a best epoch: the last evaluation is the result
keep_checkpoints = None
