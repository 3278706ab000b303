"""The packed format: one ``sprites60.npz`` (``numpy.savez_compressed``), no pickled objects.

Layout (README of the shared data): ``character_ids`` (N,) uint16 ascending, ``images``
(N, 178, 60, 60, 3) uint8, ``masks`` (N, 178, 60, 60) bool, ``attributes`` (N, 7) uint8,
``animation`` / ``frame`` (178,) uint8, ``animation_names`` (21,) str, and the official
``train_ids`` / ``val_ids`` / ``test_ids`` (uint16 file numbers).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ccvae.data.mat import IMAGE_SIZE, N_ATTRIBUTES, N_CELLS, N_POSES
from ccvae.errors import UserError
from ccvae.fileio import atomic_path

N = "N"  # placeholder for the number of characters in a shape
SCHEMA: dict[str, tuple[str, tuple]] = {
    "character_ids": ("uint16", (N,)),
    "images": ("uint8", (N, N_POSES, IMAGE_SIZE, IMAGE_SIZE, 3)),
    "masks": ("bool", (N, N_POSES, IMAGE_SIZE, IMAGE_SIZE)),
    "attributes": ("uint8", (N, N_ATTRIBUTES)),
    "animation": ("uint8", (N_POSES,)),
    "frame": ("uint8", (N_POSES,)),
    "animation_names": ("str", (N_CELLS,)),
    "train_ids": ("uint16", (None,)),
    "val_ids": ("uint16", (None,)),
    "test_ids": ("uint16", (None,)),
}
SPLITS = ("train", "val", "test")


def _check_array(path: Path, key: str, arr, n: int | None) -> None:
    """Check dtype and shape of an array, or of anything with ``.dtype`` and ``.shape``."""
    dtype, shape = SCHEMA[key]
    if dtype == "str":
        ok = arr.dtype.kind == "U"
    else:
        ok = arr.dtype == np.dtype(dtype)
    if not ok:
        raise UserError(f"{path}: '{key}' has dtype {arr.dtype}, expected {dtype}")
    want = tuple(n if d == N else d for d in shape)
    if len(want) != len(arr.shape) or any(w is not None and w != a for w, a in zip(want, arr.shape, strict=True)):
        shown = tuple("N" if d == N else ("*" if d is None else d) for d in shape)
        raise UserError(f"{path}: '{key}' has shape {tuple(arr.shape)}, expected {shown}")


class _Header:
    def __init__(self, shape: tuple, dtype: np.dtype) -> None:
        self.shape, self.dtype = shape, dtype


def _npy_header(path: Path, key: str) -> _Header:
    """Shape and dtype of one array of an .npz, from its .npy header only (nothing decompressed)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return _Header(shape, dtype)


def load_packed(path: str | Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load and validate a packed file; ``keys`` limits which arrays are decompressed.

    Small arrays are always loaded and checked; ``images`` and ``masks`` only if asked
    (they are 1.3 GB and 0.4 GB once loaded). Raises ``UserError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such data file")
    wanted = [k for k in SCHEMA if k not in ("images", "masks")]
    wanted += [k for k in (keys or ()) if k in ("images", "masks")]
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in SCHEMA if k not in npz.files]
            if missing:
                raise UserError(f"{path}: missing key(s) {', '.join(missing)}; not a ccvae packed file")
            out = {k: npz[k] for k in wanted}
    except UserError:
        raise
    except ValueError as e:
        # np.load refuses object arrays when allow_pickle=False.
        if "pickle" in str(e):
            raise UserError(f"{path}: holds pickled objects, which are refused") from None
        raise UserError(f"{path}: not a valid .npz file ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise UserError(f"{path}: truncated or corrupt .npz file ({type(e).__name__}: {e})") from None

    n = out["character_ids"].shape[0] if out["character_ids"].ndim == 1 else None
    for k, arr in out.items():
        _check_array(path, k, arr, n)
    for k in ("images", "masks"):
        if k not in out:  # not loaded: check its header, so 'info' refuses a bad file too
            try:
                header = _npy_header(path, k)
            except (zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
                raise UserError(f"{path}: cannot read the header of '{k}' ({e})") from None
            _check_array(path, k, header, n)
    ids = out["character_ids"]
    if np.any(np.diff(ids.astype(np.int64)) <= 0):
        raise UserError(f"{path}: 'character_ids' must be strictly ascending")
    present = set(ids.tolist())
    for split in SPLITS:
        unknown = sorted(set(out[f"{split}_ids"].tolist()) - present)
        if unknown:
            raise UserError(
                f"{path}: split '{split}' names character(s) {unknown[:5]} that are not in the file"
            )
    return out


def save_packed(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Validate ``arrays`` against the schema and write them atomically with ``savez_compressed``."""
    path = Path(path)
    n = arrays["character_ids"].shape[0]
    for k in SCHEMA:
        if k not in arrays:
            raise ValueError(f"save_packed: missing key {k}")
        _check_array(path, k, arrays[k], n)
    with atomic_path(path, suffix=".npz") as tmp:
        # savez_compressed appends .npz unless the name already ends with it.
        np.savez_compressed(tmp, **{k: arrays[k] for k in SCHEMA})
