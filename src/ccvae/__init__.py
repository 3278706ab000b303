"""ccvae: the cycle-consistent VAE of Jha et al. (ECCV 2018) on 2D Sprites."""

__version__ = "0.1.0"

from ccvae.checkpoint import load_run  # noqa: E402
from ccvae.data.dataset import load_dataset  # noqa: E402

__all__ = ["__version__", "load_dataset", "load_run"]
