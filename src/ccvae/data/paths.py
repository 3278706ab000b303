"""Where the packed data lives: ``--data``, else ``$CCVAE_DATA``, else the cache."""

from __future__ import annotations

import os
from pathlib import Path

from ccvae.errors import UserError

PACKED_NAME = "sprites60.npz"


def ccvae_home() -> Path:
    """``$CCVAE_HOME``, default ``~/.cache/ccvae``."""
    return Path(os.environ.get("CCVAE_HOME") or Path.home() / ".cache" / "ccvae").expanduser()


def default_data_path() -> Path:
    return ccvae_home() / PACKED_NAME


def candidate_data_path(cli_value: str | os.PathLike | None) -> Path:
    """The path the resolution rule picks, whether or not it exists."""
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get("CCVAE_DATA"):
        return Path(os.environ["CCVAE_DATA"]).expanduser()
    return default_data_path()


def resolve_data_path(cli_value: str | os.PathLike | None) -> Path:
    """Resolve the packed data file or raise a ``UserError`` saying how to get it."""
    path = candidate_data_path(cli_value)
    if not path.is_file():
        origin = "--data" if cli_value else ("$CCVAE_DATA" if os.environ.get("CCVAE_DATA") else "default path")
        raise UserError(
            f"{path}: data file not found ({origin}); run 'ccvae data prepare' to download and pack "
            f"2D Sprites, or pass --data / set CCVAE_DATA to an existing {PACKED_NAME}"
        )
    return path
