"""Checkpoints (atomic write, ``weights_only=True`` load) and ``load_run`` for analysis."""

from __future__ import annotations

import json
import numbers
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from ccvae import __version__
from ccvae.config import SECTIONS, Config
from ccvae.errors import UserError, first_line
from ccvae.fileio import atomic_path
from ccvae.model import CCVAE

FORMAT = "ccvae-checkpoint-v1"
REQUIRED = ("format", "config", "model", "step")


def previous_path(path: str | Path) -> Path:
    """Where ``save_checkpoint`` keeps the checkpoint that ``path`` replaced: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Write ``state`` (tensors, dicts, lists, numbers, strings only) atomically.

    The file it replaces is kept as ``previous_path(path)``, so a checkpoint damaged on disk later
    still leaves one to go back to. A full or read-only disk is a ``UserError``; the old files stay.
    """
    path = Path(path)
    state = {"format": FORMAT, "ccvae_version": __version__, **state}
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
            if keep_previous and path.is_file():
                # A hard link then a rename: at every moment both names hold a complete file.
                prev, link = previous_path(path), path.with_name(f".{path.name}.prev-link")
                link.unlink(missing_ok=True)
                os.link(path, link)
                os.replace(link, prev)
    except (OSError, RuntimeError) as e:  # torch.save reports ENOSPC as a RuntimeError from its zip writer
        first = first_line(e)
        raise UserError(f"{path}: cannot write the checkpoint ({first[:160]}); the last good checkpoint is kept") from None


def verify_zip(path: Path) -> None:
    """Check every member's CRC-32: ``torch.load`` does not, so flipped bytes would load silently."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, zlib.error) as e:
        raise UserError(f"{path}: truncated or damaged checkpoint ({type(e).__name__}: {str(e)[:120]}){_fallback_hint(path)}") from None
    if bad is not None:
        raise UserError(f"{path}: damaged checkpoint (CRC mismatch in {bad}){_fallback_hint(path)}")


def _fallback_hint(path: Path) -> str:
    prev = previous_path(path)
    if path.name == "last.pt" and prev.is_file():
        return f"; the previous checkpoint is {prev}: copy it over {path.name} to resume from it"
    return ""


# What a checkpoint's top-level fields must be, beyond the required keys' presence.
FIELD_TYPES = {"config": dict, "model": dict, "step": numbers.Integral, "wall_s": numbers.Real,
               "optimizers": dict, "extras": dict, "method": str,
               "opt_fwd": dict, "opt_rev": dict,  # the ccvae optimisers in checkpoints before ccvae.methods
               "rng": list, "world_size": numbers.Integral, "ema": dict}

# Which weights of a checkpoint to load: "ema", the moving average that train.ema_decay keeps; "live", the weights
# training steps; "auto", the average where the checkpoint has one, else the live weights.
WEIGHTS = ("auto", "ema", "live")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` after checking its CRCs; a damaged, truncated or
    foreign file, or one whose fields have the wrong types, is a ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    verify_zip(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = first_line(e)
        raise UserError(f"{path}: truncated or unreadable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in REQUIRED):
        raise UserError(f"{path}: not a ccvae checkpoint")
    for key, typ in FIELD_TYPES.items():
        if key in state and (not isinstance(state[key], typ) or isinstance(state[key], bool)):
            raise UserError(f"{path}: field '{key}' is {type(state[key]).__name__}, expected {typ.__name__}")
    if state["step"] < 0:
        raise UserError(f"{path}: field 'step' is negative")
    return state


def weights_of(state: dict[str, Any], path: str | Path, weights: str = "auto") -> tuple[dict, str]:
    """``(state dict, "ema" | "live")``: the model weights of a loaded checkpoint that ``weights`` asks for."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    ema = state.get("ema")
    if weights == "live" or (weights == "auto" and ema is None):
        return state["model"], "live"
    if ema is None:
        raise UserError(f"{path}: no averaged weights (the run was trained with train.ema_decay=0); "
                        f"use the live weights (--weights live)")
    if not isinstance(ema.get("weights"), dict):
        raise UserError(f"{path}: field 'ema' has no weights")
    return ema["weights"], "ema"


def describe_weights(label: str) -> str:
    """Words for a ``weights_of`` label, as the CLI summary and the report say it."""
    return "the moving average (train.ema_decay)" if label == "ema" else "the live weights"


def model_from_checkpoint(state: dict[str, Any], path: str | Path, config: Config | None = None,
                          weights: str = "auto") -> tuple[CCVAE, Config]:
    """Build the model of ``config`` (default: the checkpoint's own) and load the weights into it: the moving
    average where the checkpoint has one and ``weights`` is "auto" or "ema", else the live weights."""
    ckpt_cfg = Config.from_dict(state["config"], f"{path} (config)")
    cfg = config or ckpt_cfg
    if config is not None and config.model != ckpt_cfg.model:
        raise UserError(f"{path}: the checkpoint's model config does not match the run's config.json")
    model = CCVAE(cfg.model)
    chosen, _ = weights_of(state, path, weights)
    try:
        model.load_state_dict(chosen)
    except (RuntimeError, KeyError, TypeError) as e:
        first = first_line(e)
        raise UserError(f"{path}: weights do not match the model config ({first[:200]})") from None
    return model, cfg


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config stored in ``RUN_DIR/config.json``."""
    path = Path(run_dir) / "config.json"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; is {run_dir} a ccvae run folder?") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None
    return Config.from_dict({k: d[k] for k in SECTIONS if k in d}, str(path))


def load_run(run_dir: str | Path, checkpoint: str = "last.pt", weights: str = "auto") -> tuple[CCVAE, Config]:
    """Load a trained run for analysis: ``(model in eval mode on CPU, config)``; ``weights`` as in
    ``model_from_checkpoint`` (by default the moving average where the run kept one).

    ``model.encode(x) -> (z_mu, z_logvar, s)`` and ``model.decode(z, s) -> x``.
    """
    model, cfg, _ = load_run_weights(run_dir, checkpoint, weights)
    return model, cfg


def load_run_weights(run_dir: str | Path, checkpoint: str = "last.pt",
                     weights: str = "auto") -> tuple[CCVAE, Config, str]:
    """``load_run`` and which weights it loaded: ``(model, config, "ema" | "live")``."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / checkpoint
    if not path.is_file():
        raise UserError(f"{run_dir}: no checkpoint at checkpoints/{checkpoint}; train the run first")
    state = load_checkpoint(path)
    config = read_run_config(run_dir) if (run_dir / "config.json").is_file() else None
    _, chosen = weights_of(state, path, weights)
    model, cfg = model_from_checkpoint(state, path, config, chosen)
    return model.eval(), cfg, chosen
