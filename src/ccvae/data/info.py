"""``ccvae data info``: a summary of a packed file."""

from __future__ import annotations

from pathlib import Path

from ccvae.data.packed import SPLITS, load_packed
from ccvae.fileio import file_digest


def describe(path: Path) -> str:
    """Characters, poses, split sizes, attribute ranges and sha256 of a packed file, as text."""
    a = load_packed(path)
    ids = a["character_ids"]
    lines = [
        f"file        {path}",
        f"sha256      {file_digest(path, 'sha256')}",
        f"characters  {len(ids)} (ids {int(ids.min())}..{int(ids.max())})" if len(ids) else "characters  0",
        f"poses       {len(a['animation'])} in {len(a['animation_names'])} animations",
        "splits      " + " / ".join(f"{s} {len(a[f'{s}_ids'])}" for s in SPLITS),
    ]
    attrs = a["attributes"]
    for j in range(attrs.shape[1]):
        col = attrs[:, j]
        lo, hi = (int(col.min()), int(col.max())) if len(col) else (0, 0)
        lines.append(f"attribute {j} range {lo}..{hi} ({len(set(col.tolist()))} values)")
    return "\n".join(lines)
