"""Figures drawn from the files of a run folder (so they can be redrawn without retraining).

Image grids are PNGs with nearest-neighbour upscaling and a thin grid line between tiles.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ccvae.fileio import atomic_path  # noqa: E402


def _save_fig(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _num(v: str | None) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


# Columns of metrics.csv that are not training curves.
_NOT_CURVES = ("epoch", "step", "images", "wall_s", "images_per_s")
_TITLES = {"reconstruction": "reconstruction (MSE x1' + MSE x2')", "kl": "KL of z (per pixel)",
           "kl_s": "KL of the group's s (per pixel)", "reverse_cycle": "reverse cycle (L1)",
           "adversarial": "generator adversarial (BCE)", "discriminator": "discriminator (BCE real + fake)",
           "disc_accuracy": "discriminator accuracy", "lr": "learning rate"}
# Diagnostics drawn on the axes of the term they shadow (eval-mode beside train-mode).
_OVERLAYS = {"reverse_cycle_eval": "reverse_cycle"}


def plot_losses(metrics_csv: Path, out: Path) -> Path:
    """Every training curve of metrics.csv (the method's terms and the learning rate) against step."""
    with open(metrics_csv, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if None not in r and None not in r.values()]  # skip cut-short rows
        header = reader.fieldnames or []
    keys = [k for k in header if k not in _NOT_CURVES and k not in _OVERLAYS]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.4), squeeze=False)
    step = np.array([_num(r.get("step")) for r in rows])
    for ax, key in zip(axes[0], keys, strict=False):  # no keys: one empty axis
        y = np.array([_num(r.get(key)) for r in rows])
        ax.plot(step, y, lw=1.2, label="train mode")
        for extra, target in _OVERLAYS.items():
            if target == key and extra in header:
                y2 = np.array([_num(r.get(extra)) for r in rows])
                ax.plot(step, y2, lw=1.2, label="eval mode")
                ax.legend(fontsize=8)
                y = np.concatenate([y, y2])
        finite = y[np.isfinite(y)]
        if finite.size and np.all(finite > 0) and key != "disc_accuracy":
            ax.set_yscale("log")
        ax.set_title(_TITLES.get(key, key), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_fig(fig, out)
    return out


def tile_grid(tiles: torch.Tensor | np.ndarray, scale: int = 1, line: int = 1, line_value: int = 128) -> np.ndarray:
    """(R, C, 3, H, W) float in [0, 1] -> one uint8 RGB image with ``line`` px separators.

    Each tile is upscaled ``scale`` times by pixel repetition (nearest neighbour).
    """
    t = torch.as_tensor(tiles).detach().float().cpu().clamp(0, 1)
    R, C, _, H, W = t.shape
    img = (t * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()  # (R, C, H, W, 3)
    if scale > 1:
        img = img.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = H * scale, W * scale
    out = np.full((R * h + (R - 1) * line, C * w + (C - 1) * line, 3), line_value, dtype=np.uint8)
    for r in range(R):
        for c in range(C):
            y, x = r * (h + line), c * (w + line)
            out[y:y + h, x:x + w] = img[r, c]
    return out


def tile_origin(r: int, c: int, tile: int, line: int = 1) -> tuple[int, int]:
    """Top-left pixel (y, x) of tile (r, c) in a ``tile_grid`` image of square tiles of ``tile`` px."""
    return r * (tile + line), c * (tile + line)


def save_png(array: np.ndarray, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def underline(tiles: torch.Tensor, marked: torch.Tensor, height: int = 2) -> torch.Tensor:
    """Copy of (N, 3, H, W) tiles with a white line along the bottom of each marked tile."""
    out = tiles.clone()
    out[marked, :, -height:, :] = 1.0
    return out


def plot_classifier_curves(curves: dict[str, dict[str, dict[str, list[float]]]], out: Path) -> Path:
    """Accuracy per epoch (train and test) of every classifier probe; ``curves[task][latent]``."""
    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for latent, style in (("s", "-"), ("z", "--"), ("z_mean_std", ":")):
            c = curves[task].get(latent)
            if not c:
                continue
            ep = np.arange(1, len(c["train_acc"]) + 1)
            ax.plot(ep, c["train_acc"], style, color="tab:blue", label=f"{latent} train")
            ax.plot(ep, c["test_acc"], style, color="tab:orange", label=f"{latent} test")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, out)
    return out


def plot_predictor_curves(curves: dict[str, dict[str, list[float]]], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items(), strict=True):
        ep = np.arange(1, len(c["train_loss"]) + 1)
        ax.plot(ep, c["train_loss"], label="train (training characters)")
        ax.plot(ep, c["test_loss"], label="validation (test characters)")
        ax.set_yscale("log")
        ax.set_title(f"predictor {name}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("MSE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, out)
    return out


def plot_embeddings(s: np.ndarray, z: np.ndarray, identity: np.ndarray, pose: np.ndarray, out: Path) -> Path:
    """2-D PCA of s and of z, coloured by identity and by pose (2 x 2 panels)."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for row, (name, x) in enumerate((("s (specified)", s), ("z (unspecified)", z))):
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        xy = xc @ vt[:2].T
        for col, (label, c, cmap) in enumerate((("identity", identity, "tab20"), ("pose", pose, "viridis"))):
            ax = axes[row, col]
            ax.scatter(xy[:, 0], xy[:, 1], c=c, cmap=cmap, s=2, alpha=0.6, linewidths=0)
            ax.set_title(f"PCA of {name}, coloured by {label}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    _save_fig(fig, out)
    return out


def plot_learning_curve(rows: list[dict], out: Path) -> Path:
    """Fast probes and swap PSNR of each kept checkpoint, against step (top) and training wall time (bottom)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for r, (xkey, xlabel) in enumerate((("step", "training step"), ("wall_s", "training wall time (min)"))):
        x = np.array([row[xkey] for row in rows], dtype=float) / (60.0 if xkey == "wall_s" else 1.0)
        ax = axes[r, 0]
        for key, label in (("identity_heldout_s", "identity (unseen) from s"),
                           ("identity_heldout_z", "identity (unseen) from sampled z"),
                           ("pose_z", "pose from sampled z")):
            ax.plot(x, [row[key] for row in rows], "o-", label=label)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("test accuracy")
        ax = axes[r, 1]
        for key, label in (("swap_psnr", "ground-truth swap"), ("reconstruction_psnr", "reconstruction")):
            ax.plot(x, [row[key] for row in rows], "o-", label=label)
        ax.set_ylabel("PSNR (dB)")
        for ax in axes[r]:
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, out)
    return out


def plot_heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, out: Path,
                 fmt: str = "{:.2f}", vmax: float | None = None, cmap: str = "viridis") -> Path:
    """A labelled heat map with each cell's value written in it."""
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(min(16.0, 2.0 + 0.62 * len(cols)), min(10.0, 1.2 + 0.3 * len(rows))))
    im = ax.imshow(m, aspect="auto", cmap=cmap, vmin=0, vmax=vmax if vmax is not None else max(np.nanmax(m), 1e-9))
    step = max(1, len(cols) // 40)  # label every k-th column of a wide map
    ax.set_xticks(range(0, len(cols), step), cols[::step], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    if m.size <= 400:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="white" if v < 0.6 * (vmax or np.nanmax(m) or 1) else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    _save_fig(fig, out)
    return out
