"""Mathieu, Zhao, Sprechmann, Ramesh, LeCun: "Disentangling factors of variation in deep
representations using adversarial training", NIPS 2016 (arXiv 1611.03383).

s is deterministic, z a Gaussian with the VAE's KL (Sec. 3.1). Generator objective (Sec. 3, Eq. 4-6
in spirit; the weights follow the authors' ECCV 2018 re-implementation):
- reconstruction: x1 from (z1, s2), the s of another image of its character (the swap), and x1
  from its own (z1, s1), weighted ``method.self_reconstruction_coef``; the same for x2;
- KL(q(z|x) || N(0, I)) on both images, scaled like the cycle-consistent VAE's;
- adversarial (Sec. 3.2): images made from s1 and a z that is not x1's, either the posterior z of
  an unrelated image x3 or z ~ N(0, I), must pass a discriminator that sees them beside x1 as real
  same-character pairs. The discriminator learns real pairs (x1, x2) against those.
"""

from __future__ import annotations

import torch

from ccvae.config import Config
from ccvae.losses import kl_to_standard_normal, reconstruction_mse
from ccvae.methods.adversarial import (
    Adversarial,
    PairDiscriminator,
    adversarial_step,
    discriminator_loss,
    generator_loss,
)
from ccvae.methods.base import StepContext
from ccvae.model import CCVAE, reparameterize


class Mathieu(Adversarial):
    name = "mathieu"
    paper = "Mathieu et al., NIPS 2016 (arXiv 1611.03383)"
    TERMS = ("reconstruction", "kl", "adversarial", "discriminator", "disc_accuracy")
    MODES = ("generator", "discriminator")

    def __init__(self, model: CCVAE, cfg: Config, fast: bool = True) -> None:
        super().__init__(model, cfg, fast)
        self.extras["discriminator"] = PairDiscriminator(cfg.model)

    def loss_generator(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, eps: torch.Tensor,
                       z_prior: torch.Tensor):
        """x1, x2: (B, 3, 60, 60) one character each; x3: unrelated images; eps: (3B, z) and z_prior: (B, z) ~ N(0, I)."""
        m, B = self.model, x1.shape[0]
        mu, logvar, s = m.encode(torch.cat([x1, x2, x3]))  # (3B, d)
        z = reparameterize(mu, logvar, eps)
        z1, z2, z3 = z[:B], z[B:2 * B], z[2 * B:]
        s1, s2 = s[:B], s[B:2 * B]
        # One decoder call: swaps (z1,s2) (z2,s1), selves (z1,s1) (z2,s2), fakes (z3,s1) (prior,s1).
        out = m.decode(torch.cat([z1, z2, z1, z2, z3, z_prior]), torch.cat([s2, s1, s1, s2, s1, s1]))
        target = torch.cat([x1, x2])
        swap = 2 * reconstruction_mse(out[:2 * B], target)  # MSE(x1') + MSE(x2'), as the cycle-consistent VAE
        own = 2 * reconstruction_mse(out[2 * B:4 * B], target)
        kl = kl_to_standard_normal(mu[:2 * B].float(), logvar[:2 * B].float(), x1[0].numel()) * 2
        fakes = out[4 * B:]  # (2B, 3, 60, 60): identity of x1, pose from elsewhere
        adv = generator_loss(self.extras["discriminator"](torch.cat([x1, x1]), fakes))
        c, t = self.cfg.method, self.cfg.train
        loss = (t.reconstruction_coef * (swap + c.self_reconstruction_coef * own)
                + self.kl_term(kl, x1[0].numel(), latents=2) + c.adversarial_coef * adv)
        return loss, swap.detach(), kl.detach(), adv.detach(), fakes.detach()

    def loss_discriminator(self, x1: torch.Tensor, x2: torch.Tensor, fakes: torch.Tensor):
        """Real pairs (x1, x2) against (x1, generated with s1); the fakes carry no graph to the generator."""
        d = self.extras["discriminator"]
        B = x1.shape[0]
        return discriminator_loss(d(x1, x2), d(torch.cat([x1] * (fakes.shape[0] // B)), fakes))

    def train_step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        return adversarial_step(self, ctx, lambda b: (
            torch.randn(3 * b, self.cfg.model.style_dim, generator=ctx.g_noise, device=ctx.device),
            torch.randn(b, self.cfg.model.style_dim, generator=ctx.g_noise, device=ctx.device)))

