"""Loss terms of the cycle-consistent VAE (Jha et al., ECCV 2018, Sec. 3 and Fig. 2).

Scaling follows the authors' code (github.com/ananyahjha93/cycle-consistent-vae): MSE is a
mean over elements; the KL is summed over batch and latent dims and divided by B*C*H*W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor, image_numel: int) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), summed over batch and dims, divided by B * image_numel.

    Paper Eq. (1)-(2): the forward cycle is a VAE objective on z; the authors' code divides the
    summed KL by the number of pixels of the batch so it is on the scale of the per-pixel MSE.
    """
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return kl / (mu.shape[0] * image_numel)


def reconstruction_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (paper Eq. (2), the forward-cycle reconstruction)."""
    return F.mse_loss(x_hat.float(), x.float())


def reverse_cycle_l1(mu1: torch.Tensor, mu2: torch.Tensor) -> torch.Tensor:
    """Mean |mu1 - mu2| (paper Eq. (3)): z decoded with two identities must re-encode to the same z."""
    return F.l1_loss(mu1.float(), mu2.float())
