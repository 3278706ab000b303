"""Szabó, Hu, Portenier, Zwicker, Favaro: "Challenges in disentangling independent factors of
variation", ICLR 2018 workshop (arXiv 1711.02245).

A deterministic autoencoder (Sec. 3): the encoder's z is its mean alone (the log-variance head is
fixed at -30, sigma 3e-7, and not trained, so a "posterior sample" of z is its mean and the
evaluation needs no special case). Trained on pairs and triplets:
- autoencoding through the swap (Sec. 3, the pair loss): x1 from (z1, s2), x2 from (z2, s1),
  where x1, x2 share the attribute (the character);
- adversarial (Sec. 3, the triplet loss): the image mixing s1 with the z of an unrelated x3 must
  pass a discriminator that sees it beside x1 as a real pair sharing the attribute. The paper's
  point: nothing stops z from carrying identity too (the "reference ambiguity"), which the
  comparison measures.
"""

from __future__ import annotations

import torch
from torch import nn

from ccvae.config import Config
from ccvae.losses import reconstruction_mse
from ccvae.methods.adversarial import (
    Adversarial,
    PairDiscriminator,
    adversarial_step,
    discriminator_loss,
    generator_loss,
)
from ccvae.methods.base import StepContext
from ccvae.model import CCVAE

FIXED_LOGVAR = -30.0


class Szabo(Adversarial):
    name = "szabo"
    paper = "Szabó et al., ICLR 2018 workshop (arXiv 1711.02245)"
    TERMS = ("reconstruction", "adversarial", "discriminator", "disc_accuracy")
    MODES = ("generator", "discriminator")

    def __init__(self, model: CCVAE, cfg: Config, fast: bool = True) -> None:
        super().__init__(model, cfg, fast)
        head = model.encoder.z_logvar
        with torch.no_grad():
            nn.init.zeros_(head.weight)
            nn.init.constant_(head.bias, FIXED_LOGVAR)
        head.requires_grad_(False)
        self.extras["discriminator"] = PairDiscriminator(cfg.model)

    def loss_generator(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor):
        """x1, x2: (B, 3, 60, 60) one character each; x3: unrelated images (the pose sources)."""
        m, B = self.model, x1.shape[0]
        z, _, s = m.encode(torch.cat([x1, x2, x3]))  # z: the mean only, (3B, d)
        z1, z2, z3 = z[:B], z[B:2 * B], z[2 * B:]
        s1, s2 = s[:B], s[B:2 * B]
        out = m.decode(torch.cat([z1, z2, z3]), torch.cat([s2, s1, s1]))  # swaps, then the mix (z3, s1)
        recon = 2 * reconstruction_mse(out[:2 * B], torch.cat([x1, x2]))  # MSE(x1') + MSE(x2')
        fakes = out[2 * B:]
        adv = generator_loss(self.extras["discriminator"](x1, fakes))
        loss = self.cfg.train.reconstruction_coef * recon + self.cfg.method.adversarial_coef * adv
        return loss, recon.detach(), adv.detach(), fakes.detach()

    def loss_discriminator(self, x1: torch.Tensor, x2: torch.Tensor, fakes: torch.Tensor):
        """Real pairs (x1, x2) against (x1, mix of s1 and z3)."""
        d = self.extras["discriminator"]
        return discriminator_loss(d(x1, x2), d(x1, fakes))

    def train_step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        return adversarial_step(self, ctx, lambda b: ())
