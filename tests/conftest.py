"""Shared fixtures: tiny synthetic 2D Sprites files in the original layouts, and the real data if present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccvae.data.synthetic import (  # noqa: F401  (re-exported for the test modules)
    make_sprites_dir,
    random_character,
    synthetic_packed,
    write_character_mat,
    write_splits_mat,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "sprites"
REAL_NPZ = Path(os.environ.get("CCVAE_DATA") or SHARED / "sprites60.npz")
REAL_SAMPLE = SHARED / "reed2015-sample"


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return synthetic_packed(tmp_path_factory.mktemp("data") / "tiny.npz")


def _missing(what: str) -> None:
    """Skip where the real data is absent; fail in CI (CCVAE_REQUIRE_DATA=1), where it must be present."""
    if os.environ.get("CCVAE_REQUIRE_DATA"):
        pytest.fail(f"{what} is required here (CCVAE_REQUIRE_DATA=1) but missing")
    pytest.skip(f"{what} not found (set CCVAE_DATA or place ../shared/data/sprites beside the checkout)")


@pytest.fixture(scope="session")
def real_npz() -> Path:
    if not REAL_NPZ.is_file():
        _missing(f"real data {REAL_NPZ}")
    return REAL_NPZ


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not REAL_SAMPLE.is_dir():
        _missing(f"original sample files {REAL_SAMPLE}")
    return REAL_SAMPLE
