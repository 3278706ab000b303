"""Data layer: original ``.mat`` files, the packed ``.npz`` and in-memory sampling.

The torch-backed names (``SpritesDataset`` and its batches) are imported on first use, so that
``ccvae data prepare`` / ``data info`` and the checks of a bad path or file run, and fail, without
loading torch (about 2 s on a 2-core machine).
"""

from __future__ import annotations

from typing import Any

from ccvae.data.packed import load_packed, save_packed
from ccvae.data.paths import resolve_data_path

__all__ = ["Batch", "PairBatch", "SpritesDataset", "load_dataset", "load_packed", "save_packed", "resolve_data_path"]
_DATASET_NAMES = ("Batch", "PairBatch", "SpritesDataset", "load_dataset")


def __getattr__(name: str) -> Any:
    if name in _DATASET_NAMES:
        from ccvae.data import dataset
        return getattr(dataset, name)
    raise AttributeError(f"module 'ccvae.data' has no attribute {name!r}")
