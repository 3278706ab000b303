"""``ccvae data prepare``: original files (URL, tarball or folder) -> the packed ``.npz``."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from ccvae.data.mat import (
    ANIMATION_NAMES,
    list_character_files,
    pose_layout,
    read_character,
    read_splits,
)
from ccvae.data.packed import SPLITS, save_packed
from ccvae.errors import UserError, first_line
from ccvae.fileio import ensure_writable, file_digest

N_CHARACTERS = 672
TARBALL_NAME = "nips2015-analogy-data.tar.gz"
MIRRORS = (
    "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz",
    "http://www-personal.umich.edu/~reedscot/files/nips2015-analogy-data.tar.gz",
)
# MD5 of the whole upstream tarball, as recorded by two independent public loaders.
UPSTREAM_MD5 = "4e866a7919c1beedf53964e6f7a23686"
MEMBER_PREFIX = PurePosixPath("data/sprites")


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def download(url: str, dest: Path, md5: str | None, quiet: bool = False) -> Path:
    """Fetch ``url`` to ``dest`` via a ``.part`` file; rename only once the MD5 matches."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}",
                      disable=quiet, file=sys.stderr) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        if md5 is not None:
            got = md5sum(part)
            if got != md5:
                raise UserError(f"{url}: MD5 mismatch (got {got}, expected {md5}); download discarded")
        os.replace(part, dest)
        return dest
    finally:
        part.unlink(missing_ok=True)


def fetch_upstream(cache: Path, urls: tuple[str, ...], md5: str | None, quiet: bool) -> Path:
    """Return a verified upstream tarball in ``cache``, downloading it (mirror after mirror) if needed."""
    dest = cache / TARBALL_NAME
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        return dest
    errors = []
    for url in urls:
        try:
            _say(f"downloading {url}", quiet)
            return download(url, dest, md5, quiet)
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
    raise UserError("could not download the 2D Sprites tarball (" + "; ".join(errors) + ")")


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's path if it is a relative path without '..'; None otherwise."""
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts:
        return None
    parts = [q for q in p.parts if q != "."]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def extract_sprites(tarball: Path, dest: Path) -> Path:
    """Extract the regular files under ``data/sprites/`` of ``tarball`` flat into ``dest``.

    Every member name is checked first: an absolute path or a '..' component is refused,
    so nothing can be written outside ``dest``. Other members are never read.
    """
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = tar.getmembers()  # reads the whole index: a truncated archive fails here
            for m in members:
                if _safe_member_path(m.name) is None:
                    raise UserError(f"{tarball}: member '{m.name}' has an absolute path or '..'; refused")
            n = 0
            for m in members:
                rel = _safe_member_path(m.name)
                if not m.isfile() or rel.parent != MEMBER_PREFIX:
                    continue
                src = tar.extractfile(m)
                with src, open(dest / rel.name, "wb") as out:
                    shutil.copyfileobj(src, out)
                n += 1
    except (tarfile.TarError, EOFError, zlib.error) as e:
        first = first_line(e)
        raise UserError(f"{tarball}: not a tarball, or truncated or corrupt ({first})") from None
    except OSError as e:
        raise UserError(f"{tarball}: cannot read tarball ({e})") from None
    if n == 0:
        raise UserError(f"{tarball}: no files under {MEMBER_PREFIX}/; not the 2D Sprites tarball")
    return dest


def find_sprites_dir(directory: Path) -> Path:
    """The folder holding the ``.mat`` files: ``directory`` itself or ``data/sprites/`` below it."""
    for cand in (directory, directory / "data" / "sprites"):
        if cand.is_dir() and list_character_files(cand):
            if not (cand / "sprites_splits.mat").is_file():
                raise UserError(f"{cand}: has sprites_*.mat files but no sprites_splits.mat")
            return cand
    raise UserError(f"{directory}: no sprites_*.mat files here or under data/sprites/")


def pack_directory(directory: Path, workers: int | None = None, quiet: bool = False) -> dict[str, np.ndarray]:
    """Read every character file of a sprites folder (in parallel) into packed arrays."""
    directory = find_sprites_dir(directory)
    files = list_character_files(directory)
    splits = read_splits(directory / "sprites_splits.mat")
    ids = np.array(sorted(files), dtype=np.uint16)
    missing = N_CHARACTERS - len(ids)
    if missing > 0:
        _say(f"warning: {missing} of the {N_CHARACTERS} characters are missing from {directory}; "
             f"packing the {len(ids)} present and restricting the splits to them", quiet)
    workers = workers or min(len(ids), os.cpu_count() or 1, 8)
    paths = [files[i] for i in ids.tolist()]
    bar = tqdm(total=len(paths), desc="read .mat", unit="file", disable=quiet, file=sys.stderr)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            chars = []
            for c in pool.map(read_character, paths, chunksize=4):
                chars.append(c)
                bar.update()
    else:
        chars = []
        for p in paths:
            chars.append(read_character(p))
            bar.update()
    bar.close()

    animation, frame = pose_layout()
    present = set(ids.tolist())
    arrays = {
        "character_ids": ids,
        "images": np.stack([c.images for c in chars]),
        "masks": np.stack([c.masks for c in chars]),
        "attributes": np.stack([c.attributes for c in chars]),
        "animation": animation,
        "frame": frame,
        "animation_names": np.array(ANIMATION_NAMES),
    }
    for split in SPLITS:
        # Keep the official file order; drop characters that are not present.
        kept = [i for i in splits[split].tolist() if i in present]
        arrays[f"{split}_ids"] = np.array(kept, dtype=np.uint16)
    return arrays


def prepare(source: str | None, out: Path, cache: Path, md5: str | None = None,
            workers: int | None = None, quiet: bool = False) -> Path:
    """Resolve ``source`` (None = upstream, URL, tarball or folder), pack it, write ``out`` atomically."""
    md5 = md5.strip().lower() if md5 else None
    if md5 is not None and (len(md5) != 32 or any(c not in "0123456789abcdef" for c in md5)):
        raise UserError(f"--md5 {md5!r}: not an MD5 (32 hex digits)")
    if md5 is not None and source is not None and "://" not in source and Path(source).is_dir():
        raise UserError(f"--md5 checks a tarball or a download; {source} is a folder (drop --md5)")
    ensure_writable(Path(out).parent, "output folder")  # before minutes of reading, not after
    with tempfile.TemporaryDirectory(prefix="ccvae-prepare-") as tmp:
        tmp = Path(tmp)
        if source is None:
            tarball = fetch_upstream(cache, MIRRORS, md5 or UPSTREAM_MD5, quiet)
            directory = extract_sprites(tarball, tmp)
        elif "://" in source:
            _say(f"downloading {source}", quiet)
            try:
                tarball = download(source, tmp / TARBALL_NAME, md5 or UPSTREAM_MD5, quiet)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise UserError(f"{source}: download failed ({getattr(e, 'reason', e)})") from None
            (tmp / "x").mkdir()
            directory = extract_sprites(tarball, tmp / "x")
        else:
            path = Path(source)
            if not path.exists():
                raise UserError(f"{path}: no such file or directory (--source)")
            if path.is_dir():
                directory = path
            else:
                if md5 is not None and (got := md5sum(path)) != md5:
                    raise UserError(f"{path}: MD5 mismatch (got {got}, expected {md5})")
                (tmp / "x").mkdir()
                directory = extract_sprites(path, tmp / "x")
        arrays = pack_directory(directory, workers=workers, quiet=quiet)
    try:
        save_packed(out, arrays)
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e}); nothing was written there") from None
    return out
