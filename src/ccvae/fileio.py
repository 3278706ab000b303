"""Atomic file writes: write to a temp file beside the target, then rename; and a run's metrics.csv read back.

A crash or Ctrl-C never leaves a half-written file under a final name. No torch here, so that the
commands that only read or write files (``report``, ``data``) start, and fail, in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ccvae.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` / ``mkdir()`` would under the user's umask.

    ``mkstemp`` and ``mkdtemp`` create 0600 / 0700, which a rename would carry to the final name,
    leaving a shared data file or a served report unreadable to others.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in the target's folder; rename it onto ``path`` on success.

    ``suffix`` keeps an extension that a writer insists on (``np.savez`` adds ``.npz``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        plain_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_digest(path: str | os.PathLike, algorithm: str, chunk: int = 1 << 20) -> str:
    """Hex digest of a file (``md5``, ``sha256``, ...), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def ensure_writable(directory: str | os.PathLike, what: str = "folder") -> None:
    """Raise ``UserError`` now, before any long work, if nothing can be created in ``directory``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{directory}: cannot write to this {what} ({e.strerror or e})") from None


class DirLock:
    """An exclusive ``flock`` on ``DIR/.lock``, held until ``release()`` or the process ends.

    One process owns a run folder: a second gets a ``UserError`` naming the owner's pid. The kernel
    drops the lock when its holder dies (even by kill -9), so a stale lock never blocks a retry.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        import fcntl

        from ccvae.errors import UserError

        self.path = Path(directory) / ".lock"
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as e:
            raise UserError(f"{directory}: cannot create the run folder ({e.strerror or e})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise UserError(f"{directory}: in use by another ccvae process (pid {owner}); "
                            "wait for it to finish or stop it") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def read_metrics(path: Path, warn=None) -> list[dict]:
    """Rows of a ``metrics.csv`` as dicts of floats. A row that does not parse (a kill can cut the last
    append short) is skipped, with a call of ``warn(message)`` when given; an unreadable file is a ``UserError``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    rows, bad = [], 0
    for r in raw:
        try:
            if None in r or None in r.values():  # too many or too few fields
                raise ValueError
            rows.append({k: float(v) for k, v in r.items()})
        except (TypeError, ValueError):
            bad += 1
    if bad and warn is not None:
        warn(f"{path}: skipped {bad} malformed row(s)")
    return rows


def last_metric(path: Path, key: str) -> float | None:
    """``key`` of the last row of a ``metrics.csv``; None when the file is missing or empty."""
    if not path.is_file():
        return None
    rows = read_metrics(path)
    return rows[-1].get(key) if rows else None
