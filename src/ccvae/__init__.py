"""ccvae: the cycle-consistent VAE of Jha et al. (ECCV 2018) on 2D Sprites.

``load_run`` and ``load_dataset`` are imported on first use, so ``import ccvae.cli`` (what the
``ccvae`` command runs first) does not pull in torch: a Ctrl-C in the first second is then
caught by the command like any other.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "load_dataset", "load_run"]


def __getattr__(name: str) -> Any:
    if name == "load_run":
        from ccvae.checkpoint import load_run
        return load_run
    if name == "load_dataset":
        from ccvae.data.dataset import load_dataset
        return load_dataset
    raise AttributeError(f"module 'ccvae' has no attribute {name!r}")
