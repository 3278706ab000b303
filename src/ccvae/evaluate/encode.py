"""Encode every (character, pose) of a set of characters with the model in eval mode."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ccvae.data.dataset import SpritesDataset
from ccvae.model import CCVAE


@dataclass
class Encodings:
    """z (= z_mu, no sampling) and s for ``rows`` x every pose."""

    rows: torch.Tensor  # (R,) dataset rows
    z: torch.Tensor  # (R, P, style_dim)
    s: torch.Tensor  # (R, P, class_dim)


@torch.no_grad()
def encode_rows(model: CCVAE, data: SpritesDataset, rows: torch.Tensor, batch_size: int = 512) -> Encodings:
    """Encode all poses of the characters ``rows``, batch by batch over the whole set."""
    model.eval()
    device = next(model.parameters()).device
    P = data.n_poses
    flat = (rows[:, None] * P + torch.arange(P, device=rows.device)).flatten()
    zs, ss = [], []
    for i in range(0, len(flat), batch_size):
        idx = flat[i:i + batch_size]
        x = data.gather(idx // P, idx % P).to(device)
        mu, _, s = model.encode(x)
        zs.append(mu.float().cpu())
        ss.append(s.float().cpu())
    z, s = torch.cat(zs), torch.cat(ss)
    return Encodings(rows.cpu(), z.view(len(rows), P, -1), s.view(len(rows), P, -1))


@torch.no_grad()
def decode_batched(model: CCVAE, z: torch.Tensor, s: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """decode(z, s) in batches; returns CPU float images (N, 3, 60, 60)."""
    model.eval()
    device = next(model.parameters()).device
    out = [model.decode(z[i:i + batch_size].to(device), s[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, len(z), batch_size)]
    return torch.cat(out)
