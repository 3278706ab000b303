"""One training step of each cycle, as a module so DistributedDataParallel can wrap it.

``fast=True`` batches the two halves of each cycle into one encoder and one decoder call
(identical maths: instance norm is per sample); ``fast=False`` is the plain form, kept for
the equivalence test and the baseline benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ccvae.config import TrainConfig
from ccvae.losses import kl_to_standard_normal, reconstruction_mse, reverse_cycle_l1
from ccvae.model import CCVAE, reparameterize


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module, use_running: bool = False) -> Iterator[None]:
    """Batch norm leaves its running averages alone; with ``use_running`` it also normalises with them.

    The reverse cycle feeds the decoder z ~ N(0, I) and the encoder generated images; letting those
    move the running averages makes eval mode (which uses them) see statistics of data it is never
    given, which cost 3 dB of reconstruction PSNR in a measured quick run. ``use_running`` makes the
    reverse cycle see the network users get (eval-mode batch norm): with batch statistics the encoder
    learned an invariance that held only under them (L1 1.8e-5 in train mode, 1.05e-2 in eval mode).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
        if use_running:
            m.eval()
    try:
        yield
    finally:
        for m, (mom, training) in zip(bns, saved, strict=True):
            m.momentum = mom
            m.train(training)


class CycleLosses(nn.Module):
    """``forward("forward", x1, x2, eps)`` -> (loss, recon, kl); ``forward("reverse", xa, xb, noise)`` -> (loss, l1)."""

    def __init__(self, model: CCVAE, cfg: TrainConfig, fast: bool = True) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.fast = fast
        self.kl_scale = 1.0  # KL warm-up factor in [0, 1], set by the trainer before each step

    def forward(self, mode: str, a: torch.Tensor, b: torch.Tensor, noise: torch.Tensor):
        if mode == "forward":
            return self.forward_cycle(a, b, noise)
        if mode == "reverse":
            return self.reverse_cycle(a, b, noise)
        raise ValueError(f"unknown mode {mode!r}")

    def forward_cycle(self, x1: torch.Tensor, x2: torch.Tensor, eps: torch.Tensor):
        """Paper Sec. 3.1, Fig. 2(a): swap s within a same-identity pair and reconstruct.

        x1, x2: (B, 3, 60, 60), the same characters; eps: (2B, style_dim) ~ N(0, I).
        """
        m, B = self.model, x1.shape[0]
        numel = x1[0].numel()
        if self.fast:
            mu, logvar, s = m.encode(torch.cat([x1, x2]))  # (2B, d) each
            z = reparameterize(mu, logvar, eps)
            s1, s2 = s[:B], s[B:]
            x_hat = m.decode(z, torch.cat([s2, s1]))  # x1' = dec(z1, s2), x2' = dec(z2, s1): (2B, 3, 60, 60)
            # mean over the concatenation = (MSE(x1', x1) + MSE(x2', x2)) / 2
            recon = 2 * reconstruction_mse(x_hat, torch.cat([x1, x2]))
            # KL(z1) + KL(z2), each summed and divided by B * C*H*W (authors' code)
            kl = kl_to_standard_normal(mu.float(), logvar.float(), numel) * 2
        else:
            mu1, logvar1, s1 = m.encode(x1)
            mu2, logvar2, s2 = m.encode(x2)
            z1 = reparameterize(mu1, logvar1, eps[:B])
            z2 = reparameterize(mu2, logvar2, eps[B:])
            recon = reconstruction_mse(m.decode(z1, s2), x1) + reconstruction_mse(m.decode(z2, s1), x2)
            kl = kl_to_standard_normal(mu1.float(), logvar1.float(), numel) + kl_to_standard_normal(
                mu2.float(), logvar2.float(), numel)
        # Paper Eq. (2) with the reference coefficients: 2 * reconstruction + 3 * KL.
        loss = self.cfg.reconstruction_coef * recon + self.cfg.kl_coef * self.kl_scale * kl
        return loss, recon.detach(), kl.detach()

    def reverse_cycle(self, xa: torch.Tensor, xb: torch.Tensor, noise: torch.Tensor):
        """Paper Sec. 3.2, Fig. 2(b): one z decoded with two identities must re-encode to the same z.

        xa, xb: (B, 3, 60, 60), independent images; noise: (B, style_dim) ~ N(0, I). z is ``noise``
        itself (the paper: z ~ p(z)) or, with ``reverse_z = "posterior"``, a sample of xa's own
        posterior (a z the decoder meets in the forward cycle). Gradients reach the encoder only
        through the re-encoding: s and z are detached and the decoder runs without a graph.
        """
        m, B = self.model, xa.shape[0]
        with frozen_norm_statistics(m, use_running=self.cfg.reverse_norm_stats == "running"):
            return self._reverse_cycle(m, B, xa, xb, noise)

    def _reverse_cycle(self, m: CCVAE, B: int, xa: torch.Tensor, xb: torch.Tensor, noise: torch.Tensor):
        posterior = self.cfg.reverse_z == "posterior"
        with torch.no_grad():
            if self.fast:
                mu, logvar, s = m.encode(torch.cat([xa, xb]))  # (2B, class_dim), detached
                z = reparameterize(mu[:B], logvar[:B], noise) if posterior else noise
                x_gen = m.decode(torch.cat([z, z]), s)  # (2B, 3, 60, 60)
            else:
                mu_a, logvar_a, s_a = m.encode(xa)
                s_b = m.encode(xb)[2]
                z = reparameterize(mu_a, logvar_a, noise) if posterior else noise
                x_gen = torch.cat([m.decode(z, s_a), m.decode(z, s_b)])
        if self.fast:
            mu = m.encode(x_gen)[0]
            mu1, mu2 = mu[:B], mu[B:]
        else:
            mu1, mu2 = m.encode(x_gen[:B])[0], m.encode(x_gen[B:])[0]
        # Paper Eq. (3): L1 between the two re-encoded z means, weighted 10 (reference run).
        l1 = reverse_cycle_l1(mu1, mu2)
        return self.cfg.reverse_cycle_coef * l1, l1.detach()
