"""Training-step throughput of ccvae against a straightforward baseline, with FLOPs and utilisation.

    python benchmarks/train_speed.py [--preset paper] [--device auto|cpu|cuda] [--data PATH]

"Ours" is exactly what ``ccvae train`` runs by default (``Trainer.train_step``: the forward and
reverse cycles, both optimiser steps, sampling included). The baseline is the same model in eager
float32, fed by a ``torch.utils.data.DataLoader`` that builds each pair item by item in Python,
pairing by scanning a table (as public re-implementations do), with fresh pairs every step.
Medians of ``--repeats`` timed blocks after a warm-up; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from ccvae.config import build_config
from ccvae.data import load_dataset, resolve_data_path
from ccvae.hardware import cpu_summary, resolve_device
from ccvae.methods.ccvae import CycleVAE
from ccvae.model import CCVAE
from ccvae.train import Trainer


class ItemPairs(Dataset):
    """One pair per item: the image, then another pose of its character found by scanning the table."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, seed: int = 0) -> None:
        self.images = images
        P = images.shape[1]
        self.table = np.stack([np.repeat(rows, P), np.tile(np.arange(P), len(rows))], 1)  # (row, pose)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.table)

    def _image(self, row: int, pose: int) -> torch.Tensor:
        return torch.from_numpy(self.images[row, pose]).permute(2, 0, 1).float() / 255.0

    def __getitem__(self, i: int):
        row, pose = self.table[i]
        same = np.flatnonzero(self.table[:, 0] == row)  # like df[df.identity == row]
        j = same[self.rng.integers(len(same))]
        return self._image(row, pose), self._image(*self.table[j])


class ItemImages(ItemPairs):
    def __getitem__(self, i: int):
        return self._image(*self.table[i])


def forever(loader: DataLoader):
    while True:
        yield from loader


def timed_blocks(step, n_steps: int, repeats: int, sync) -> list[float]:
    """Seconds per step of ``repeats`` blocks of ``n_steps`` steps."""
    out = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        for _ in range(n_steps):
            step()
        sync()
        out.append((time.perf_counter() - t) / n_steps)
    return out


def peak_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    times = timed_blocks(lambda: a @ b, 3 if device.type == "cpu" else 50, repeats, sync)
    return 2 * n**3 / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper", choices=("paper", "quick", "smoke"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data")
    ap.add_argument("--precision", default=None, help="override train.precision (default: what ccvae train uses)")
    ap.add_argument("--method", default=None, help="ccvae (default), mathieu, szabo or mlvae")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set train.compile=reduce-overhead")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--epoch", action="store_true", help="also time one whole epoch of our step")
    args = ap.parse_args()

    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    overrides = ([f"train.precision={args.precision}"] if args.precision else []) + args.set
    cfg = build_config(args.preset, overrides=overrides, method=args.method)
    B = cfg.train.batch_size
    path = resolve_data_path(args.data)
    print(f"machine: {cpu_summary()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}", file=sys.stderr)

    # --- ours: Trainer.train_step, as `ccvae train` runs it -------------------------------------
    data = load_dataset(path, device)
    trainer = Trainer(cfg, data, "/nonexistent", device, quiet=True)
    order = trainer.epoch_order(0)
    pos = {"i": 0}

    def our_step():
        i = pos["i"] % trainer.steps_per_epoch
        trainer.step = pos["i"]  # as Trainer.run counts: the step's form (train.reverse_every) and lr follow it
        trainer.train_step(order[i * B:(i + 1) * B])
        pos["i"] += 1

    for _ in range(3):
        our_step()
    ours = statistics.median(timed_blocks(our_step, args.steps, args.repeats, sync))

    def data_only():
        i = pos["i"] % trainer.steps_per_epoch
        data.pairs_from_flat(order[i * B:(i + 1) * B], trainer.g_data)
        data.sample(B, trainer.g_data)
        data.sample(B, trainer.g_data)
        pos["i"] += 1

    data_s = statistics.median(timed_blocks(data_only, 20, args.repeats, sync))
    # FLOPs of the eager step (a compiled or captured step hides its kernels from the counter; the maths is the same).
    eager = cfg.train.compile == "off" and cfg.train.capture == "off"
    counter_trainer = trainer if eager else Trainer(
        build_config(args.preset, overrides=[*overrides, "train.compile=off", "train.capture=off"], method=args.method),
        data, "/nonexistent", device, quiet=True)
    # Over one cycle of the step's forms (the quick presets run the reverse cycle every third step), averaged.
    cycle = max(1, cfg.train.reverse_every)
    counter_trainer.step = 0  # train_step advances it through the cycle
    with FlopCounterMode(display=False) as counter:
        for k in range(cycle):
            counter_trainer.train_step(order[k * B:(k + 1) * B])
    flops = counter.get_total_flops() / cycle
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = peak_flops(device, peak_dtype)
    print(f"ours ({trainer.precision}): {ours * 1000:.1f} ms/step, {B / ours:,.0f} images/s, "
          f"{1 / ours:.2f} steps/s; data {100 * data_s / ours:.1f} % of the step", file=sys.stderr)
    print(f"model FLOPs per step {flops / 1e9:.2f} GFLOP; peak {peak / 1e9:.0f} GFLOP/s "
          f"({'bf16' if peak_dtype == torch.bfloat16 else 'fp32'} {2048}x{2048} matmul); "
          f"utilisation {100 * flops / ours / peak:.1f} %", file=sys.stderr)

    epoch_s = None
    if args.epoch:
        sync()
        trainer.step = 0  # the epoch from its first step; train_step advances it
        t = time.perf_counter()
        for i in range(trainer.steps_per_epoch):
            trainer.train_step(order[i * B:(i + 1) * B])
        sync()
        epoch_s = time.perf_counter() - t
        print(f"one epoch ({trainer.steps_per_epoch} steps): {epoch_s:.1f} s", file=sys.stderr)

    # --- baseline: eager fp32, item-by-item DataLoader --------------------------------------------
    base = None
    if not args.skip_baseline:
        images = data.images.cpu().numpy()
        rows = data.rows("train").cpu().numpy()
        torch.manual_seed(0)
        model = CCVAE(cfg.model).to(device)
        losses = CycleVAE(model, cfg, fast=False)
        opts = losses.make_optimizers()
        opt_fwd, opt_rev = opts["fwd"], opts["rev"]
        pairs = forever(DataLoader(ItemPairs(images, rows), batch_size=B, shuffle=True, drop_last=True))
        singles = forever(DataLoader(ItemImages(images, rows, seed=1), batch_size=B, shuffle=True, drop_last=True))

        def base_step():
            x1, x2 = (t.to(device) for t in next(pairs))
            eps = torch.randn(2 * B, cfg.model.style_dim, device=device)
            opt_fwd.zero_grad()
            loss, _, _ = losses("forward", x1, x2, eps)
            loss.backward()
            opt_fwd.step()
            xa, xb = next(singles).to(device), next(singles).to(device)
            z = torch.randn(B, cfg.model.style_dim, device=device)
            opt_rev.zero_grad()
            losses("reverse", xa, xb, z)[0].backward()
            opt_rev.step()

        for _ in range(2):
            base_step()
        base = statistics.median(timed_blocks(base_step, args.steps, args.repeats, sync))
        print(f"baseline (fp32, item-by-item DataLoader): {base * 1000:.1f} ms/step, {B / base:,.0f} images/s",
              file=sys.stderr)

    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    result = {
        "device": str(device), "preset": args.preset, "method": cfg.method.name, "compile": cfg.train.compile, "capture": cfg.train.capture,
        "precision": trainer.precision, "batch_size": B, "ms_per_step": round(1000 * ours, 2),
        "images_per_s": round(B / ours, 1), "steps_per_s": round(1 / ours, 3),
        "baseline_images_per_s": None if base is None else round(B / base, 1),
        "speedup": None if base is None else round(base / ours, 2),
        "flops_per_step": flops, "peak_flops": round(peak), "utilisation": round(flops / ours / peak, 4),
        "data_share": round(data_s / ours, 4), "peak_memory_mb": round(peak_mem),
        "epoch_s": None if epoch_s is None else round(epoch_s, 2), "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
