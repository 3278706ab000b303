"""The cycle-consistent VAE (Jha et al., ECCV 2018): encoder -> (z_mu, z_logvar, s), decoder (z, s) -> x.

Pure: tensors in, tensors out. No files, no device choice. The Sprites network of the paper
was never published; the default (``ModelConfig()``) is the small network of the public
re-implementation whose run we compare against, so our numbers line up with it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ccvae.config import ModelConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # GroupNorm with one channel per group is instance norm with a per-channel affine; unlike
        # nn.InstanceNorm2d it has a native channels-last CPU kernel (no reshape copies).
        return nn.GroupNorm(channels, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class Encoder(nn.Module):
    """x (B, 3, H, W) in [0, 1] -> z_mu, z_logvar (B, style_dim), s (B, class_dim)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layers, c_in = [], 3
        for c in cfg.enc_channels:
            layers += [nn.Conv2d(c_in, c, cfg.enc_kernel, cfg.enc_stride, cfg.enc_padding), _norm(cfg.norm, c), nn.ReLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        flat = c_in * cfg.encoder_sizes()[-1] ** 2
        self.z_mu = nn.Linear(flat, cfg.style_dim)
        self.z_logvar = nn.Linear(flat, cfg.style_dim)
        self.s = nn.Linear(flat, cfg.class_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) -> the flattened features the heads read: (B, 512) by default."""
        return self.convs(x).flatten(1)  # (B, 128, 2, 2) -> (B, 512)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.z_mu(h), self.z_logvar(h), self.s(h)  # (B, style_dim) x2, (B, class_dim)


class Decoder(nn.Module):
    """(z (B, style_dim), s (B, class_dim)) -> x (B, 3, H, W) in [0, 1]; mirrors the encoder."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sizes = cfg.encoder_sizes()  # decoder walks these backwards: 2 -> 6 -> 14 -> 29 -> 60
        self.seed_shape = (cfg.dec_channels[0], sizes[-1], sizes[-1])
        self.fc = nn.Sequential(
            nn.Linear(cfg.style_dim + cfg.class_dim, cfg.dec_hidden),
            nn.LeakyReLU(cfg.leak),
            nn.Linear(cfg.dec_hidden, math.prod(self.seed_shape)),
            nn.LeakyReLU(cfg.leak),
        )
        layers, film = [], []
        outs = (*cfg.dec_channels[1:], 3)
        for i, (c_in, c_out) in enumerate(zip(cfg.dec_channels, outs, strict=True)):
            size_in, size_out = sizes[-1 - i], sizes[-2 - i]
            # Pick padding / output_padding so the output is exactly the encoder's size at this depth.
            base = (size_in - 1) * 2 + cfg.dec_kernel
            pad = max(0, math.ceil((base - size_out) / 2))
            out_pad = size_out - (base - 2 * pad)
            if not 0 <= out_pad < 2:
                raise ValueError(f"decoder cannot map {size_in}px to {size_out}px with kernel {cfg.dec_kernel}")
            layers.append(nn.ConvTranspose2d(c_in, c_out, cfg.dec_kernel, 2, pad, output_padding=out_pad))
            if i < len(outs) - 1:
                layers += [_norm(cfg.dec_norm, c_out), nn.LeakyReLU(cfg.leak)]
                film.append(nn.Linear(cfg.class_dim, 2 * c_out))
        self.deconvs = nn.Sequential(*layers)
        # FiLM heads, zero-initialised so training starts from the plain decoder; None keeps the paper's decoder
        # (and its state-dict keys). A modulation follows each norm, i.e. every third layer of ``deconvs``.
        self.film = nn.ModuleList(film) if cfg.dec_film else None
        if self.film is not None:
            for head in self.film:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, s], dim=1))  # (B, 1024)
        h = h.view(-1, *self.seed_shape)  # (B, 256, 2, 2)
        if self.film is None:
            return torch.sigmoid(self.deconvs(h))  # (B, 3, 60, 60)
        for i, layer in enumerate(self.deconvs):
            h = layer(h)
            if i % 3 == 1:  # after the norm of block i // 3
                gamma, beta = self.film[i // 3](s).chunk(2, dim=1)  # (B, C) each
                h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return torch.sigmoid(h)  # (B, 3, 60, 60)


class CCVAE(nn.Module):
    """Encoder and decoder of the cycle-consistent VAE."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        errs = cfg.validate()
        if errs:
            raise ValueError("; ".join(errs))
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 3, 60, 60) -> z_mu (B, style_dim), z_logvar (B, style_dim), s (B, class_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """(z, s) -> x (B, 3, 60, 60) in [0, 1]."""
        return self.decoder(z, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: decode(z_mu, s)."""
        mu, _, s = self.encode(x)
        return self.decode(mu, s)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps (Kingma & Welling 2014), with ``eps`` ~ N(0, I) drawn by the caller."""
    return mu + eps * torch.exp(0.5 * logvar)


