"""Learning curves: every kept checkpoint of a run scored with fast probes and the swap PSNR.

``ccvae evaluate RUN --checkpoints`` adds ``learning_curve.json`` and ``learning_curve.png`` to
``eval/``: identity of the unseen test characters from s and from sampled z, pose from sampled z
and the ground-truth swap PSNR, against training step and wall time, so a user sees whether more
compute still pays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ccvae.checkpoint import load_checkpoint, model_from_checkpoint
from ccvae.config import Config
from ccvae.data.dataset import SpritesDataset
from ccvae.evaluate.encode import Encodings, encode_rows, prepare_for_eval
from ccvae.evaluate.probes import ProbeSettings, fit_classifier
from ccvae.evaluate.swap import swap_metrics


@dataclass
class CurveSettings:
    probe: ProbeSettings
    n_swaps: int = 1000
    # Test images reconstructed for the curve's reconstruction PSNR (a seeded draw; the run's own evaluation
    # reconstructs all 17,800): all of them took 9 of a checkpoint's ~22 s for the quick network (2-core Zen 4).
    n_reconstruct: int = 2000
    seed: int = 0
    batch_size: int = 512
    train_share: float = 0.8
    # A checkpoint within this share of the run's steps of a later scored one adds no point to the curve.
    min_gap: float = 0.01
    weights: str = "auto"  # which weights of each checkpoint (checkpoint.WEIGHTS): those the run's evaluation scored


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """``epoch_N.pt`` in epoch order, then ``last.pt``; ``learning_curve`` drops those next to a later one."""
    ckpt = run_dir / "checkpoints"
    epochs = sorted(ckpt.glob("epoch_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    last = ckpt / "last.pt"
    return epochs + ([last] if last.is_file() else [])


def _probe_acc(x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, n: int, s: CurveSettings,
               enc: Encodings | None = None) -> float:
    """Test accuracy of a probe; with ``enc``, x is the sampled z and training draws a fresh sample each step."""
    if enc is None:
        res = fit_classifier(x[mask], labels[mask], x[~mask], labels[~mask], n, s.probe, s.seed)
    else:
        res = fit_classifier(enc.z[mask], labels[mask], x[~mask], labels[~mask], n, s.probe, s.seed,
                             train_sigma=torch.exp(0.5 * enc.z_logvar[mask]))
    return float(res.test_acc)


def score_checkpoint(model, data: SpritesDataset, s: CurveSettings) -> dict:
    """Fast measures of one model on the test characters (the same splits for every checkpoint)."""
    test = data.rows("test").cpu()
    enc: Encodings = encode_rows(model, data, test, s.batch_size)
    R, P = enc.z.shape[:2]
    g = torch.Generator().manual_seed(s.seed)
    n_train = int(round(s.train_share * P))
    pose_mask = torch.zeros(R, P, dtype=torch.bool)
    pose_mask.scatter_(1, torch.rand(R, P, generator=g).argsort(1)[:, :n_train], True)  # 80 % of each one's poses
    char_mask = torch.zeros(R, P, dtype=torch.bool)
    char_mask[torch.randperm(R, generator=g)[:max(1, int(round(s.train_share * R)))]] = True  # 80 % of characters
    ident = torch.arange(R)[:, None].expand(R, P)
    pose = torch.arange(P)[None, :].expand(R, P)
    z = enc.z_sample(s.seed + 1000)
    sw = swap_metrics(model, data, enc, s.n_swaps, s.seed + 5, s.batch_size, n_reconstruct=s.n_reconstruct,
                      diagnostics=False)
    return {
        "identity_heldout_s": _probe_acc(enc.s, ident, pose_mask, R, s),
        "identity_heldout_z": _probe_acc(z, ident, pose_mask, R, s, enc),
        "pose_z": _probe_acc(z, pose, char_mask, P, s, enc),
        "swap_psnr": sw["swap_psnr"],
        "reconstruction_psnr": sw["reconstruction_psnr"],
        "reconstructed_images": sw["n_reconstructed"],
    }


def learning_curve(run_dir: Path, cfg: Config, data: SpritesDataset, device: torch.device, s: CurveSettings,
                   log=print) -> list[dict]:
    """Score every kept checkpoint; rows sorted by step.

    Latest first, so a checkpoint within ``s.min_gap`` of the run's steps of a later one is skipped: the
    quick preset's epoch_3 lies 28 steps before ``last.pt`` and would cost a sixth of the curve for no point.
    """
    rows: list[dict] = []
    for path in reversed(kept_checkpoints(run_dir)):
        state = load_checkpoint(path)
        step = int(state["step"])
        if rows and rows[-1]["step"] - step <= s.min_gap * rows[0]["step"]:
            log(f"learning curve: {path.name} (step {step}) skipped: step {rows[-1]['step']} is scored")
            continue
        model, _ = model_from_checkpoint(state, path, cfg, s.weights)
        model = prepare_for_eval(model, device)
        log(f"learning curve: {path.name} (step {step})")
        rows.append({"checkpoint": path.name, "step": step, "wall_s": float(state.get("wall_s", 0.0)),
                     **score_checkpoint(model, data, s)})
    return sorted(rows, key=lambda r: r["step"])
