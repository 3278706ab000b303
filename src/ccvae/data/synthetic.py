"""Small synthetic 2D Sprites files, in the original ``.mat`` layouts and in the packed format.

For tests and fault drills (``benchmarks/faults.py``): real-format files that exercise the readers
without the 52 MB dataset. Not used by training or evaluation.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from ccvae.data.mat import ANIMATION_NAMES, CELL_FRAMES, N_POSES, pose_layout
from ccvae.data.packed import save_packed

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 ."


def random_character(rng: np.random.Generator, n_poses: int = N_POSES):
    images = rng.integers(0, 256, (n_poses, 60, 60, 3), dtype=np.uint8)
    masks = rng.random((n_poses, 60, 60)) > 0.5
    attrs = rng.integers(0, 4, 7).astype(np.uint8)
    return images, masks, attrs


def write_character_mat(path: Path, images: np.ndarray, masks: np.ndarray, attrs: np.ndarray,
                        cell_frames=CELL_FRAMES, row_len: int = 10800) -> None:
    """A ``sprites_{i}.mat`` in the MATLAB v7.3 layout: HDF5 with a 512-byte header, object references,
    one column-major 60x60x3 image per row of a (n_frames, 10800) float64 cell."""
    # MATLAB flattens column-major: the inverse of row.reshape(3, 60, 60).transpose(2, 1, 0).
    rows = images.transpose(0, 3, 2, 1).reshape(len(images), -1).astype(np.float64) / 255.0
    mrows = masks.transpose(0, 2, 1).reshape(len(masks), -1).astype(np.float64)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for key, data in (("sprites", rows), ("masks", mrows)):
            out = f.create_dataset(key, (len(cell_frames), 1), dtype=h5py.ref_dtype)
            start = 0
            for c, n in enumerate(cell_frames):
                cell = data[start:start + n]
                if key == "sprites" and row_len != cell.shape[1]:
                    cell = cell[:, :row_len]
                ds = refs.create_dataset(f"{key}_{c}", data=cell, compression="gzip")
                out[c, 0] = ds.ref
                start += n
        f.create_dataset("labels", data=attrs.astype(np.float64).reshape(7, 1))
    with open(path, "r+b") as fh:
        fh.write(MATLAB_HEADER.ljust(128, b" "))


def write_splits_mat(path: Path, train, val, test) -> None:
    """``sprites_splits.mat`` (MATLAB v5): 1-based character numbers as doubles."""
    to = lambda ids: np.array([[i + 1 for i in ids]], dtype=np.float64)  # noqa: E731
    scipy.io.savemat(path, {"trainidx": to(train), "validx": to(val), "testidx": to(test)})


def make_sprites_dir(directory: Path, ids=(0, 3, 5, 9), splits=((9, 0), (5,), (3,)), seed: int = 0) -> dict:
    """Write a tiny original-format folder; return the arrays a correct packer must produce."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chars = {}
    for i in ids:
        chars[i] = random_character(rng)
        write_character_mat(directory / f"sprites_{i}.mat", *chars[i])
    write_splits_mat(directory / "sprites_splits.mat", *splits)
    animation, frame = pose_layout()
    order = sorted(ids)
    return {
        "character_ids": np.array(order, dtype=np.uint16),
        "images": np.stack([chars[i][0] for i in order]),
        "masks": np.stack([chars[i][1] for i in order]),
        "attributes": np.stack([chars[i][2] for i in order]),
        "animation": animation, "frame": frame, "animation_names": np.array(ANIMATION_NAMES),
        "train_ids": np.array([i for i in splits[0] if i in ids], dtype=np.uint16),
        "val_ids": np.array([i for i in splits[1] if i in ids], dtype=np.uint16),
        "test_ids": np.array([i for i in splits[2] if i in ids], dtype=np.uint16),
    }


def synthetic_packed(path: Path, n_chars: int = 12, n_poses: int = N_POSES, seed: int = 0,
                     splits=None) -> Path:
    """A small packed file with learnable structure: each character a colour, each pose a position."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n_chars, n_poses, 60, 60, 3), dtype=np.uint8)
    colours = rng.integers(60, 256, (n_chars, 3))
    for p in range(n_poses):
        y, x = 5 + (p * 7) % 40, 5 + (p * 13) % 40
        images[:, p, y:y + 15, x:x + 15] = colours[:, None, None, :]
    animation, frame = pose_layout()
    ids = np.arange(n_chars, dtype=np.uint16)
    n_train = n_chars // 2
    n_val = max(1, n_chars // 6)
    splits = splits or (ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:])
    save_packed(path, {
        "character_ids": ids, "images": images, "masks": images.max(-1) > 0,
        "attributes": rng.integers(0, 3, (n_chars, 7)).astype(np.uint8),
        "animation": animation, "frame": frame, "animation_names": np.array(ANIMATION_NAMES),
        "train_ids": splits[0].astype(np.uint16), "val_ids": splits[1].astype(np.uint16),
        "test_ids": splits[2].astype(np.uint16),
    })
    return path
