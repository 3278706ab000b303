"""A critic of the dependence between z and s, for ``train.independence_coef`` (beyond the paper).

The density-ratio trick (Sugiyama et al. 2012; Kim and Mnih, FactorVAE, ICML 2018, Sec. 3): a classifier
D trained to tell samples of the joint q(z, s) from samples of the product q(z) q(s) has, at its optimum,
logit D(z, s) = log q(z, s) / (q(z) q(s)), so its mean logit over joint samples estimates the mutual
information I(z; s) in nats. Joint samples are a forward-cycle z beside the s it is decoded with, that of the
other image of its pair (the same character in another pose: s carries some pose too, and a z beside its own
image's s would be charged for the pose the two share); product samples are the same z beside the s of another
pair's image (another character). The encoder is charged that estimate, so z stops carrying what s already says:
in 2D Sprites every character is drawn in the same poses, so a z that depends on s carries the character, which a
swap then draws on the wrong one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ccvae.methods.base import with_fixed_weights


class LatentCritic(nn.Module):
    """(z, s) -> one logit per row: "are z and s of one character?" (d_z + d_s) -> 256 -> 256 -> 1, LeakyReLU 0.2.

    No batch norm: joint and product rows share a batch, and batch statistics would mix them."""

    def __init__(self, d_z: int, d_s: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_z + d_s, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, s], dim=1)).squeeze(1)  # (N,)


def other_characters(s: torch.Tensor) -> torch.Tensor:
    """s (2B, d) that a forward cycle decodes its z with ([s2; s1]: row i of each half is pair i's character)
    rolled by one row, so that every row gets another pair's s: product samples of q(z) q(s). (2B, d)"""
    return s.roll(1, dims=0)


def dependence_estimate(critic: LatentCritic, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The critic's estimate of I(z; s) in nats: its mean logit on the joint rows (z_i, s_i). z (N, d_z) carries
    the encoder's graph; s is detached and the critic's weights are held fixed, so only z learns from it."""
    return with_fixed_weights(critic)(z, s.detach()).float().mean()


def critic_loss(critic: LatentCritic, z: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic loss of the critic on joint rows (z_i, s_i) (label 1: s_i of z_i's character, from another image)
    and product rows (z_i, s of another character) (label 0), codes detached; and its accuracy over both (for the log)."""
    z, s = z.detach(), s.detach()
    logits = critic(torch.cat([z, z]), torch.cat([s, other_characters(s)])).float()  # (2N,)
    n = z.shape[0]
    labels = torch.cat([torch.ones(n, device=logits.device), torch.zeros(n, device=logits.device)])
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    acc = ((logits > 0).float() == labels).float().mean()
    return loss, acc.detach()
