"""In-memory 2D Sprites for training and evaluation, with vectorised sampling.

Images stay uint8 (672 x 178 x 60 x 60 x 3 = 1.3 GB) on whatever device the dataset is
moved to; a batch is gathered by index and converted to float in one op, so there is no
per-item Python work on the sampling path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ccvae.data.packed import SPLITS, load_packed
from ccvae.errors import UserError

SPLIT_NAMES = (*SPLITS, "all")


@dataclass
class Batch:
    """A batch of images with their labels. ``x``: (B, 3, 60, 60) float in [0, 1]."""

    x: torch.Tensor
    character: torch.Tensor  # (B,) row index into the dataset (0..N-1)
    pose: torch.Tensor  # (B,) pose index (0..177)


@dataclass
class PairBatch:
    """Two images of the same character in independent random poses."""

    x1: torch.Tensor  # (B, 3, 60, 60)
    x2: torch.Tensor  # (B, 3, 60, 60)
    character: torch.Tensor  # (B,)
    pose1: torch.Tensor  # (B,)
    pose2: torch.Tensor  # (B,)


class SpritesDataset:
    """All characters of a packed file, held once as a uint8 tensor (N, 178, 60, 60, 3)."""

    def __init__(self, images: torch.Tensor, character_ids: np.ndarray, split_ids: dict[str, np.ndarray],
                 attributes: np.ndarray | None = None, source: str = "<memory>",
                 animation: np.ndarray | None = None, frame: np.ndarray | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 5 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, P, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.character_ids = np.asarray(character_ids)
        self.attributes = attributes  # (N, 7) uint8: the identity factors
        self.animation = animation  # (P,) animation cell of each pose (action x direction)
        self.frame = frame  # (P,) frame within the cell
        self.source = source
        row_of = {int(c): i for i, c in enumerate(self.character_ids.tolist())}
        self._rows = {"all": torch.arange(len(self.character_ids))}
        for split, ids in split_ids.items():
            try:
                self._rows[split] = torch.tensor([row_of[int(c)] for c in ids], dtype=torch.long)
            except KeyError as e:
                raise UserError(f"{source}: split '{split}' names character {e.args[0]}, which is not there") from None
        self._rows = {k: v.to(images.device) for k, v in self._rows.items()}

    # -- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SpritesDataset:
        """Load and validate a packed ``.npz`` (only the arrays training needs)."""
        arrays = load_packed(path, keys=("images",))
        images = torch.from_numpy(arrays["images"])
        ds = cls(images, arrays["character_ids"], {s: arrays[f"{s}_ids"] for s in SPLITS},
                 attributes=arrays["attributes"], source=str(path), animation=arrays["animation"],
                 frame=arrays["frame"])
        return ds.to(device)

    def to(self, device: str | torch.device) -> SpritesDataset:
        device = torch.device(device)
        if self.images.device != device:
            self.images = self.images.to(device)
            self._rows = {k: v.to(device) for k, v in self._rows.items()}
        return self

    # -- shape ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def n_characters(self) -> int:
        return self.images.shape[0]

    @property
    def n_poses(self) -> int:
        return self.images.shape[1]

    def rows(self, split: str) -> torch.Tensor:
        """Row indices (into ``images``) of a split's characters, in the split's order."""
        if split not in self._rows:
            raise UserError(f"unknown split '{split}'; choose from {', '.join(SPLIT_NAMES)}")
        return self._rows[split]

    def n_images(self, split: str) -> int:
        return len(self.rows(split)) * self.n_poses

    def fingerprint(self) -> dict:
        """What a trained run must agree on with the data it is evaluated on."""
        h = hashlib.sha1()
        for split in SPLITS:
            h.update(self.character_ids[self.rows(split).cpu().numpy()].astype(np.int64).tobytes())
        return {"n_characters": self.n_characters, "n_poses": self.n_poses,
                "image_size": int(self.images.shape[2]), "splits_sha1": h.hexdigest()}

    # -- access -------------------------------------------------------------------------
    def gather(self, character: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] of (row, pose) pairs: (B, 3, 60, 60), contiguous."""
        x = self.images[character, pose]  # (B, 60, 60, 3) uint8
        # One fused copy: uint8 NHWC -> float NCHW; then scale in place.
        out = torch.empty(x.shape[0], 3, *x.shape[1:3], device=x.device)
        return out.copy_(x.permute(0, 3, 1, 2)).div_(255.0)

    def flat_order(self, split: str, generator: torch.Generator) -> torch.Tensor:
        """A random order of every (character, pose) of a split, as flat indices row * P + pose."""
        rows = self.rows(split)
        perm = torch.randperm(len(rows) * self.n_poses, generator=generator, device=generator.device)
        perm = perm.to(self.device)
        return rows[perm // self.n_poses] * self.n_poses + perm % self.n_poses

    def pairs_from_flat(self, flat: torch.Tensor, generator: torch.Generator) -> PairBatch:
        """Pairs whose first image is ``flat`` (row * P + pose); the second, the same character in a random pose."""
        character, pose1 = flat // self.n_poses, flat % self.n_poses
        pose2 = self._randint(self.n_poses, len(flat), generator)
        return PairBatch(self.gather(character, pose1), self.gather(character, pose2), character, pose1, pose2)

    def sample_pairs(self, n: int, generator: torch.Generator, split: str = "train") -> PairBatch:
        """``n`` pairs: a uniform character of the split, two independent uniform poses."""
        rows = self.rows(split)
        character = rows[self._randint(len(rows), n, generator)]
        pose1 = self._randint(self.n_poses, n, generator)
        pose2 = self._randint(self.n_poses, n, generator)
        return PairBatch(self.gather(character, pose1), self.gather(character, pose2), character, pose1, pose2)

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        """``n`` independent uniform (character, pose) images of the split."""
        rows = self.rows(split)
        character = rows[self._randint(len(rows), n, generator)]
        pose = self._randint(self.n_poses, n, generator)
        return Batch(self.gather(character, pose), character, pose)

    def _randint(self, high: int, n: int, generator: torch.Generator) -> torch.Tensor:
        # generator None: the device's default generator (the one a CUDA graph capture can replay).
        device = self.device if generator is None else generator.device
        return torch.randint(high, (n,), generator=generator, device=device).to(self.device)


def load_dataset(path: str | Path, device: str | torch.device = "cpu") -> SpritesDataset:
    """Load a packed 2D Sprites file (see ``ccvae data prepare``) into memory."""
    return SpritesDataset.load(path, device)
