"""The packed format: one ``sprites60.npz`` (``numpy.savez_compressed``), no pickled objects.

Layout (README of the shared data): ``character_ids`` (N,) uint16 ascending, ``images``
(N, 178, 60, 60, 3) uint8, ``masks`` (N, 178, 60, 60) bool, ``attributes`` (N, 7) uint8,
``animation`` / ``frame`` (178,) uint8, ``animation_names`` (21,) str, and the official
``train_ids`` / ``val_ids`` / ``test_ids`` (uint16 file numbers).
"""

from __future__ import annotations

import zipfile
import zlib
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
    def __init__(self, shape: tuple, dtype: np.dtype, member_bytes: int) -> None:
        self.shape, self.dtype, self.member_bytes = shape, dtype, member_bytes


def _npy_header(path: Path, key: str) -> _Header:
    """Shape and dtype of one array of an .npz from its .npy header, and the member's uncompressed size."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return _Header(shape, dtype, zf.getinfo(f"{key}.npy").file_size)


def _check_size(path: Path, key: str, header: _Header) -> None:
    """A header must not claim more data than its member holds: a doctored header would otherwise make
    ``np.load`` allocate whatever it claims (say 60,000 characters, 390 GB) before failing."""
    need = int(np.prod(header.shape, dtype=np.float64)) * header.dtype.itemsize
    if need > header.member_bytes:
        raise UserError(f"{path}: '{key}' claims shape {tuple(header.shape)} ({need / 1e9:.1f} GB) but its data is "
                        f"only {header.member_bytes / 1e9:.3f} GB; the file is damaged")


def load_packed(path: str | Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Load and validate a packed file; ``keys`` limits which arrays are decompressed.

    Small arrays are always loaded and checked; ``images`` and ``masks`` only if asked
    (they are 1.3 GB and 0.4 GB once loaded), after their headers were checked against the
    file. Raises ``UserError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such data file")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a .npz file (no zip archive in it); make one with 'ccvae data prepare'")
    small = [k for k in SCHEMA if k not in ("images", "masks")]
    big = [k for k in (keys or ()) if k in ("images", "masks")]
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in SCHEMA if k not in npz.files]
            if missing:
                raise UserError(f"{path}: missing key(s) {', '.join(missing)}; not a ccvae packed file")
            out = {k: npz[k] for k in small}
            n = out["character_ids"].shape[0] if out["character_ids"].ndim == 1 else None
            _check_array(path, "character_ids", out["character_ids"], n)
            for k in ("images", "masks"):  # headers first: nothing big is decompressed before this
                try:
                    header = _npy_header(path, k)
                except (zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
                    raise UserError(f"{path}: cannot read the header of '{k}' ({e})") from None
                _check_array(path, k, header, n)
                _check_size(path, k, header)
            for k in big:
                out[k] = npz[k]
    except UserError:
        raise
    except MemoryError:
        raise UserError(f"{path}: not enough memory to load it (about 1.7 GB for all 672 characters)") from None
    except ValueError as e:
        # np.load refuses object arrays when allow_pickle=False.
        if "pickle" in str(e) or "Object arrays" in str(e):
            raise UserError(f"{path}: holds pickled objects, which are refused") from None
        raise UserError(f"{path}: not a valid .npz file ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, zlib.error) as e:
        raise UserError(f"{path}: truncated or corrupt .npz file ({type(e).__name__}: {e})") from None

    for k, arr in out.items():
        _check_array(path, k, arr, n)
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
