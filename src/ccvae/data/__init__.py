"""Data layer: original ``.mat`` files, the packed ``.npz`` and in-memory sampling."""

from ccvae.data.dataset import Batch, PairBatch, SpritesDataset, load_dataset
from ccvae.data.packed import load_packed, save_packed
from ccvae.data.paths import resolve_data_path

__all__ = ["Batch", "PairBatch", "SpritesDataset", "load_dataset", "load_packed", "save_packed", "resolve_data_path"]
