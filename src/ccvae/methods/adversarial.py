"""What the adversarial baselines share: a discriminator on image pairs and its two losses.

Mathieu et al. 2016 (arXiv 1611.03383, Sec. 3.2) and Szabó et al. 2018 (arXiv 1711.02245, Sec. 4)
both judge *pairs*: a real pair is two images of one character; a fake pair is a real image beside
an image generated with that image's identity features, so the generator is pushed to keep identity
in s and to make images the discriminator cannot tell from real ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ccvae.config import ModelConfig
from ccvae.hardware import autocast
from ccvae.methods.base import Method, StepContext, done


class PairDiscriminator(nn.Module):
    """(x_ref, x) -> one logit per pair: "is x another real image of x_ref's character?"

    The encoder's conv stack (same widths, kernel and stride as the backbone) on the 6-channel
    stack of both images. Instance norm (per sample, like GroupNorm per channel) rather than batch
    norm: real and fake pairs come in separate batches, and batch statistics would tell them apart.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layers, c_in = [], 6
        for i, c in enumerate(cfg.enc_channels):
            layers.append(nn.Conv2d(c_in, c, cfg.enc_kernel, cfg.enc_stride, cfg.enc_padding))
            if i:  # no norm on the first layer (DCGAN, Radford et al. 2016)
                layers.append(nn.GroupNorm(c, c))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * cfg.encoder_sizes()[-1] ** 2, 1)

    def forward(self, x_ref: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(torch.cat([x_ref, x], dim=1))  # (B, 6, 60, 60) -> (B, C, 2, 2)
        return self.head(h.flatten(1)).squeeze(1)  # (B,)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss (Goodfellow et al. 2014, Sec. 3): -log D(fake)."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-log D(real) - log(1 - D(fake)), and the discriminator's accuracy on both (for logs and throttling)."""
    real, fake = real_logits.float(), fake_logits.float()
    loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    acc = torch.cat([(real > 0).float(), (fake <= 0).float()]).mean()
    return loss, acc.detach()


class Adversarial(Method):
    """What the adversarial baselines share: a generator Adam and a discriminator Adam; ``capture_blocker``."""

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam over the generator side and a separate Adam over the discriminator (``disc_lr``, ``disc_beta1``)."""
        m, t = self.cfg.method, self.cfg.train
        return {"gen": self.adam(self.generator_parameters()),
                "disc": self.adam(self.extras["discriminator"].parameters(), lr=m.disc_lr or t.lr,
                                  betas=(m.disc_beta1, t.beta2))}

    def capture_blocker(self) -> str | None:
        if self.cfg.method.disc_max_accuracy < 1:
            return (f"method.disc_max_accuracy={self.cfg.method.disc_max_accuracy} decides on the host whether the "
                    f"discriminator steps; set it to 1 to capture the step")
        return None


def adversarial_step(method: Method, ctx: StepContext, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """Generator update, then discriminator update on the generator's (detached) images.

    ``noise(B)`` gives the extra tensors ``loss_generator`` takes after (x1, x2, x3). The
    discriminator's update is skipped while its accuracy exceeds ``method.disc_max_accuracy``.
    """
    pairs = ctx.data.pairs_from_flat(ctx.flat, ctx.g_data)
    x3 = ctx.data.sample(pairs.x1.shape[0], ctx.g_data).x  # pose sources, independent of x1's character
    extra = noise(pairs.x1.shape[0])
    opt_g, opt_d = ctx.optimizers["gen"], ctx.optimizers["disc"]
    opt_g.zero_grad(set_to_none=True)
    with autocast(ctx.device, ctx.precision):
        loss, *terms, fakes = ctx.call("generator", pairs.x1, pairs.x2, x3, *extra)
    loss.backward()
    opt_g.step()
    opt_d.zero_grad(set_to_none=True)  # drops what the generator's backward left on the discriminator
    with autocast(ctx.device, ctx.precision):
        d_loss, acc = ctx.call("discriminator", pairs.x1, pairs.x2, fakes)
    d_loss.backward()
    limit = method.cfg.method.disc_max_accuracy
    if limit >= 1 or _mean_over_ranks(acc) <= limit:
        opt_d.step()
    return done(*terms, d_loss, acc)


def _mean_over_ranks(x: torch.Tensor) -> float:
    """``x`` averaged over DDP ranks (so every replica takes the same decision), as a float: a host sync."""
    import torch.distributed as dist

    x = x.detach().clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x.item()
