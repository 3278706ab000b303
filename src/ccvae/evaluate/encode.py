"""Encode every (character, pose) of a set of characters with the model in eval mode."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ccvae.data.dataset import SpritesDataset
from ccvae.hardware import has_instance_norm, resolve_memory_format
from ccvae.model import CCVAE


@dataclass
class Encodings:
    """The z posterior (mean, log-variance) and s for ``rows`` x every pose."""

    rows: torch.Tensor  # (R,) dataset rows
    z: torch.Tensor  # (R, P, style_dim): the posterior mean
    s: torch.Tensor  # (R, P, class_dim)
    z_logvar: torch.Tensor  # (R, P, style_dim)

    def select(self, positions: torch.Tensor) -> Encodings:
        """The encodings of the characters at ``positions`` (indices into ``rows``)."""
        return Encodings(self.rows[positions], self.z[positions], self.s[positions], self.z_logvar[positions])

    def z_sample(self, seed: int) -> torch.Tensor:
        """One draw z = mu + sigma * eps per image (R, P, style_dim): what the decoder is fed in training."""
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(self.z.shape, generator=g)
        return self.z + eps * torch.exp(0.5 * self.z_logvar)


def prepare_for_eval(model: CCVAE, device: torch.device | str) -> CCVAE:
    """``model`` on ``device`` in eval mode, in the layout its fp32 forward passes run fastest in.

    Evaluation encodes and decodes in fp32. On a CPU, channels_last (NHWC) is what
    ``train.memory_format=auto`` picks for fp32 (``hardware.resolve_memory_format``): the quick network decoded
    31 % and encoded 36 % faster in it (2-core Zen 4), with decodes identical and encodings within 3e-6.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    if resolve_memory_format("auto", device, "fp32", has_instance_norm(model)) == "channels_last":
        model = model.to(memory_format=torch.channels_last)  # 4-D weights only
    return model


@torch.no_grad()
def encode_rows(model: CCVAE, data: SpritesDataset, rows: torch.Tensor, batch_size: int = 512) -> Encodings:
    """Encode all poses of the characters ``rows``, batch by batch over the whole set."""
    model.eval()
    device = next(model.parameters()).device
    P = data.n_poses
    flat = (rows[:, None] * P + torch.arange(P, device=rows.device)).flatten()
    zs, ss, lvs = [], [], []
    for i in range(0, len(flat), batch_size):
        idx = flat[i:i + batch_size]
        x = data.gather(idx // P, idx % P).to(device)
        mu, logvar, s = model.encode(x)
        zs.append(mu.float().cpu())
        ss.append(s.float().cpu())
        lvs.append(logvar.float().cpu())
    z, s, lv = torch.cat(zs), torch.cat(ss), torch.cat(lvs)
    R = len(rows)
    return Encodings(rows.cpu(), z.view(R, P, -1), s.view(R, P, -1), lv.view(R, P, -1))


@torch.no_grad()
def decode_batched(model: CCVAE, z: torch.Tensor, s: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """decode(z, s) in batches; returns CPU float images (N, 3, 60, 60)."""
    model.eval()
    device = next(model.parameters()).device
    # contiguous: a channels_last model (prepare_for_eval) decodes NHWC, and callers view the images as NCHW.
    out = [model.decode(z[i:i + batch_size].to(device), s[i:i + batch_size].to(device)).float().cpu().contiguous()
           for i in range(0, len(z), batch_size)]
    return torch.cat(out)
