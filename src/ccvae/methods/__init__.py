"""Training methods behind one interface (``base.Method``): the cycle-consistent VAE and the
baselines of its Table 1. ``build_method`` picks one by ``cfg.method.name``."""

from __future__ import annotations

from ccvae.config import Config
from ccvae.methods.base import Method, StepContext
from ccvae.methods.ccvae import CycleVAE
from ccvae.methods.mathieu import Mathieu
from ccvae.methods.mlvae import MLVAE
from ccvae.methods.szabo import Szabo
from ccvae.model import CCVAE

METHODS: dict[str, type[Method]] = {m.name: m for m in (CycleVAE, Mathieu, Szabo, MLVAE)}

__all__ = ["METHODS", "Method", "StepContext", "build_method"]


def build_method(cfg: Config, model: CCVAE, fast: bool = True) -> Method:
    """The method ``cfg.method.name`` around ``model`` (the shared encoder/decoder backbone)."""
    return METHODS[cfg.method.name](model, cfg, fast)
