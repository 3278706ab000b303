"""Reader for the original files of Reed et al. (2015): ``sprites_{i}.mat`` and the splits.

Each character file is MATLAB v7.3 (HDF5). ``sprites`` and ``masks`` are (21, 1) object
references, one per animation cell; a cell holds (n_frames, 10800) float64 rows, each a
60x60x3 image flattened in MATLAB column-major order. The splits file is MATLAB v5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from ccvae.errors import UserError, first_line

IMAGE_SIZE = 60
N_CELLS = 21
# Frames per animation cell, in file order (README of the shared data).
CELL_FRAMES = (7,) * 4 + (8,) * 4 + (9,) * 4 + (6,) * 4 + (13,) * 4 + (6,)
N_POSES = sum(CELL_FRAMES)  # 178
N_ATTRIBUTES = 7
ANIMATION_NAMES = tuple(
    f"{action}_{direction}"
    for action in ("spellcast", "thrust", "walk", "slash", "shoot")
    for direction in ("up", "left", "down", "right")
) + ("hurt_down",)
SPLIT_KEYS = {"train": "trainidx", "val": "validx", "test": "testidx"}
CHARACTER_FILE = re.compile(r"^sprites_(\d+)\.mat$")


@dataclass
class Character:
    """One character as read from its ``.mat`` file."""

    images: np.ndarray  # (178, 60, 60, 3) uint8
    masks: np.ndarray  # (178, 60, 60) bool
    attributes: np.ndarray  # (7,) uint8


def pose_layout() -> tuple[np.ndarray, np.ndarray]:
    """Animation cell and frame-in-cell of each of the 178 poses."""
    animation = np.repeat(np.arange(N_CELLS), CELL_FRAMES).astype(np.uint8)
    frame = np.concatenate([np.arange(n) for n in CELL_FRAMES]).astype(np.uint8)
    return animation, frame


def _read_cells(f: h5py.File, key: str, row_len: int, path: Path) -> list[np.ndarray]:
    if key not in f:
        raise UserError(f"{path}: no '{key}' variable; not a sprites_*.mat file")
    refs = f[key]
    if refs.dtype != h5py.ref_dtype or refs.size != N_CELLS:
        raise UserError(f"{path}: '{key}' should hold {N_CELLS} object references, got shape {refs.shape} of {refs.dtype}")
    cells = []
    for c, ref in enumerate(refs[()].ravel()):
        if not ref:
            raise UserError(f"{path}: '{key}' cell {c} is an empty reference")
        cell = f[ref]
        if not isinstance(cell, h5py.Dataset) or cell.ndim != 2 or cell.shape[1] != row_len:
            raise UserError(
                f"{path}: '{key}' cell {c} has shape {getattr(cell, 'shape', None)}; rows must be {row_len} long"
            )
        if cell.shape[0] != CELL_FRAMES[c]:
            raise UserError(
                f"{path}: '{key}' cell {c} has {cell.shape[0]} frames, expected {CELL_FRAMES[c]} "
                f"(every character has the same {N_POSES} poses)"
            )
        cells.append(cell[()])
    return cells


def read_character(path: str | Path) -> Character:
    """Read one ``sprites_{i}.mat`` file into uint8 images, bool masks and attributes.

    Raises ``UserError`` naming the file for anything that is not the documented layout.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            sprites = _read_cells(f, "sprites", 3 * IMAGE_SIZE * IMAGE_SIZE, path)
            masks = _read_cells(f, "masks", IMAGE_SIZE * IMAGE_SIZE, path)
            if "labels" not in f:
                raise UserError(f"{path}: no 'labels' variable")
            labels = np.asarray(f["labels"][()], dtype=np.float64).ravel()
    except UserError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
        # h5py raises OSError for truncated or non-HDF5 files, and KeyError / RuntimeError / ValueError
        # for damaged object headers, local heaps or references.
        first = first_line(e)
        raise UserError(f"{path}: cannot read as MATLAB v7.3/HDF5, damaged or not a sprites file "
                        f"({type(e).__name__}: {first[:160]})") from None
    if labels.size != N_ATTRIBUTES:
        raise UserError(f"{path}: 'labels' has {labels.size} values, expected {N_ATTRIBUTES}")

    rows = np.concatenate(sprites, axis=0)  # (178, 10800) float64 in [0, 1]
    # Column-major flattening: reshape to (C, W, H), then transpose to (H, W, C).
    images = rows.reshape(N_POSES, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 3, 2, 1)
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise UserError(f"{path}: pixel values outside [0, 1]")
    images = np.rint(images * 255).astype(np.uint8)
    mask_rows = np.concatenate(masks, axis=0)
    mask_img = mask_rows.reshape(N_POSES, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 1) > 0.5
    return Character(
        images=np.ascontiguousarray(images),
        masks=np.ascontiguousarray(mask_img),
        attributes=np.rint(labels).astype(np.uint8),
    )


def read_splits(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``sprites_splits.mat``: 1-based character numbers -> 0-based file numbers, file order kept."""
    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types (ValueError, TypeError, ...) for bad files
        raise UserError(f"{path}: cannot read as a MATLAB splits file ({e})") from None
    out = {}
    for split, key in SPLIT_KEYS.items():
        if key not in mat:
            raise UserError(f"{path}: no '{key}' variable")
        ids = np.asarray(mat[key]).ravel()
        if ids.size and (ids.min() < 1 or not np.all(ids == np.rint(ids))):
            raise UserError(f"{path}: '{key}' must hold positive whole character numbers")
        out[split] = (ids.astype(np.int64) - 1).astype(np.uint16)
    return out


def list_character_files(directory: Path) -> dict[int, Path]:
    """Map file number -> path for every ``sprites_{i}.mat`` in ``directory``."""
    found = {}
    for p in directory.iterdir():
        m = CHARACTER_FILE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))
