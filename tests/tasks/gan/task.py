"""dcgan's training: two Adam optimizers, and on every batch a D step (real against fake) then a
G step (fake called real), each network called directly (model.D, model.G)."""
import zlib

import torch
import torch.nn.functional as F

import config
from gitexp import media


def configure_optimizers(cfg, model, steps_per_epoch):
    betas = (cfg.beta1, 0.999)
    return {"optimizer": {"G": torch.optim.Adam(model.G.parameters(), lr=cfg.lr, betas=betas),
                          "D": torch.optim.Adam(model.D.parameters(), lr=cfg.lr, betas=betas)}}


def train_step(model, batch, optimizer, device):
    real = batch.to(device)
    ones, zeros = torch.ones(len(real), 1, device=device), torch.zeros(len(real), 1, device=device)
    fake = model.G(torch.randn(len(real), config.nz, device=device))  # the noise: the global RNG
    # (1) D: maximize log D(x) + log(1 - D(G(z)))
    d_real, d_fake = model.D(real), model.D(fake.detach())
    loss_d = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
    optimizer["D"].zero_grad(set_to_none=True)
    loss_d.backward()
    optimizer["D"].step()
    # (2) G: maximize log D(G(z))
    loss_g = F.binary_cross_entropy_with_logits(model.D(fake), ones)
    optimizer["G"].zero_grad(set_to_none=True)
    loss_g.backward()
    optimizer["G"].step()
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(d_real).mean().detach(), "d_fake": torch.sigmoid(d_fake).mean().detach()}


def evaluate(model, batches, device, *, split, step):
    """D on the set's real points and on G's samples of a fixed noise (dcgan's fixed_noise, one
    per set): its loss and accuracy, how far the samples lie from the circle of modes, and the
    samples drawn (dcgan saves them at each epoch's end: here a medium, at the step)."""
    fixed = torch.Generator().manual_seed(zlib.crc32(split.encode()))
    loss_sum, correct, count, off_circle = 0.0, 0, 0, 0.0
    for real in batches:
        real = real.to(device)
        fake = model.G(torch.randn(len(real), config.nz, generator=fixed).to(device))
        d_real, d_fake = model.D(real), model.D(fake)
        loss_sum += (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real), reduction="sum")
                     + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake), reduction="sum")).item()
        correct += int((d_real > 0).sum() + (d_fake <= 0).sum())
        count += 2 * len(real)
        off_circle += (fake.norm(dim=1) - config.radius).abs().sum().item()
    return {"d_loss": loss_sum / count, "d_acc": correct / count, "off_circle": 2 * off_circle / count,
            "samples": media.Image(scatter(real, fake))}


def scatter(real, fake):
    """The last batch's real points and G's samples of the fixed noise, as a matplotlib figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 3), dpi=60)
    axes = figure.add_subplot()
    axes.scatter(*real.cpu().T, s=4, c="grey", label="real")
    axes.scatter(*fake.cpu().T, s=4, c="tab:red", label="G(fixed noise)")
    axes.set_aspect("equal")
    axes.legend(loc="upper right", fontsize=6)
    return figure
