"""Data-layer benchmark: load time, pair sampling rate, prepare time per .mat file.

    python benchmarks/data.py [--data sprites60.npz] [--sample-dir DIR] [--repeats 5]

Prints medians of ``--repeats`` runs and one JSON line. Targets (issue 2): load <= 5 s,
>= 20,000 pairs/s at batch 64, <= 0.1 s per .mat file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ccvae.data import load_dataset
from ccvae.data.mat import list_character_files, read_character
from ccvae.data.paths import resolve_data_path
from ccvae.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="packed file (default: $CCVAE_DATA, then the cache)")
    ap.add_argument("--sample-dir", default=str(ROOT.parent / "shared/data/sprites/reed2015-sample"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    path = resolve_data_path(args.data)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")

    load_s = median_time(lambda: load_dataset(path), args.repeats)
    print(f"load {path.name} into the dataset: {load_s:.2f} s (median of {args.repeats}; target <= 5)")

    ds = load_dataset(path)
    g = torch.Generator().manual_seed(0)
    n_batches = 200
    for _ in range(10):
        ds.sample_pairs(64, g)
    rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for _ in range(n_batches):
            ds.sample_pairs(64, g)
        rates.append(64 * n_batches / (time.perf_counter() - t))
    pairs_s = statistics.median(rates)
    print(f"pair sampling at batch 64: {pairs_s:,.0f} pairs/s (median of {args.repeats}; target >= 20,000)")

    sample = Path(args.sample_dir)
    files = list(list_character_files(sample).values()) if sample.is_dir() else []
    result = {"load_s": round(load_s, 3), "pairs_per_s": round(pairs_s)}
    if files:
        serial = median_time(lambda: [read_character(f) for f in files], args.repeats) / len(files)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "x.npz"
            full = median_time(lambda: prepare(str(sample), out, cache=Path(tmp), quiet=True), args.repeats)
        print(f"read one .mat file: {serial:.3f} s serial (median of {args.repeats} over {len(files)} files; target <= 0.1)")
        print(f"whole 'prepare' of {len(files)} files (parallel read, pack, compressed write): {full:.2f} s "
              f"= {full / len(files):.3f} s per file")
        result.update(mat_read_s_per_file=round(serial, 4), prepare_s_per_file=round(full / len(files), 4))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
