"""ML-VAE: Bouchacourt, Tomioka, Nowozin, "Multi-Level Variational Autoencoder: Learning
Disentangled Representations from Grouped Observations", AAAI 2018 (arXiv 1705.08841).

Here s (the content, shared by a group) is Gaussian too: each image's encoder gives
q(s | x_i) = N(mu_i, sigma_i^2) (the backbone's s head is the mean; this method adds a
log-variance head), and the group's posterior is their product (Sec. 3.2, Eq. 6-7):
precision = sum_i 1/sigma_i^2, mean = (sum_i mu_i/sigma_i^2) / precision. A group is a
same-character pair. z stays per image. The objective is the grouped ELBO (Sec. 3.1, Eq. 4):
each image reconstructed from its own z and the group's s sample, KL on every z, and KL on the
group's s once per group; scaled like the cycle-consistent VAE (MSE mean, KL / (B*C*H*W)).
At test time s is the single image's mean, as for the other methods.
"""

from __future__ import annotations

import torch
from torch import nn

from ccvae.config import Config
from ccvae.hardware import autocast
from ccvae.losses import kl_to_standard_normal, reconstruction_mse
from ccvae.methods.base import Method, StepContext, done
from ccvae.model import CCVAE, reparameterize


def product_of_gaussians(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor,
                         logvar2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of N(mu1, s1^2) * N(mu2, s2^2), renormalised (ML-VAE Eq. 7)."""
    p1, p2 = torch.exp(-logvar1), torch.exp(-logvar2)  # precisions
    var = 1.0 / (p1 + p2)
    return (mu1 * p1 + mu2 * p2) * var, torch.log(var)


class MLVAE(Method):
    name = "mlvae"
    paper = "Bouchacourt et al., AAAI 2018 (arXiv 1705.08841)"
    TERMS = ("reconstruction", "kl", "kl_s")
    MODES = ("elbo",)

    def __init__(self, model: CCVAE, cfg: Config, fast: bool = True) -> None:
        super().__init__(model, cfg, fast)
        self.extras["s_logvar"] = nn.Linear(model.encoder.s.in_features, cfg.model.class_dim)

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.model.parameters(), *self.extras.parameters()]

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"elbo": self.adam(self.generator_parameters())}

    def loss_elbo(self, x1: torch.Tensor, x2: torch.Tensor, eps_z: torch.Tensor, eps_s: torch.Tensor):
        """x1, x2: (B, 3, 60, 60), one character per row; eps_z: (2B, z), eps_s: (B, s) ~ N(0, I)."""
        enc, B = self.model.encoder, x1.shape[0]
        h = enc.features(torch.cat([x1, x2]))  # (2B, F)
        mu_z, logvar_z = enc.z_mu(h), enc.z_logvar(h)
        mu_s, logvar_s = enc.s(h), self.extras["s_logvar"](h)
        mu_g, logvar_g = product_of_gaussians(mu_s[:B].float(), logvar_s[:B].float(),
                                              mu_s[B:].float(), logvar_s[B:].float())  # (B, s)
        s_g = reparameterize(mu_g, logvar_g, eps_s)
        z = reparameterize(mu_z, logvar_z, eps_z)
        x_hat = self.model.decode(z, torch.cat([s_g, s_g]).to(z.dtype))  # each image from its z and the group's s
        numel = x1[0].numel()
        recon = 2 * reconstruction_mse(x_hat, torch.cat([x1, x2]))  # MSE(x1') + MSE(x2')
        kl_z = kl_to_standard_normal(mu_z.float(), logvar_z.float(), numel) * 2
        kl_s = kl_to_standard_normal(mu_g, logvar_g, numel)  # one group s per pair
        t = self.cfg.train
        # Capacity (when set) counts three latents a pair: two z and the group's s.
        loss = t.reconstruction_coef * recon + self.kl_term(kl_z + kl_s, numel, latents=3)
        return loss, recon.detach(), kl_z.detach(), kl_s.detach()

    def train_step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = ctx.data.pairs_from_flat(ctx.flat, ctx.g_data)
        b, d = pairs.x1.shape[0], self.cfg.model
        eps_z = torch.randn(2 * b, d.style_dim, generator=ctx.g_noise, device=ctx.device)
        eps_s = torch.randn(b, d.class_dim, generator=ctx.g_noise, device=ctx.device)
        opt = ctx.optimizers["elbo"]
        opt.zero_grad(set_to_none=True)
        with autocast(ctx.device, ctx.precision):
            loss, *terms = ctx.call("elbo", pairs.x1, pairs.x2, eps_z, eps_s)
        loss.backward()
        opt.step()
        return done(*terms)
