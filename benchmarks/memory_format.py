"""Training step in the two memory formats (``train.memory_format``), timed interleaved.

    python benchmarks/memory_format.py [--presets quick-v2,quick-v3] [--precisions bf16,fp32] [--set KEY=VALUE]...

One ``Trainer`` per (preset, precision, format), each warmed up, then ``--repeats`` rounds in which every
trainer times ``--steps`` consecutive steps of its epoch order: the formats alternate within a round, so
a machine's drift hits both alike. Prints the median ms a step of each, the ratio channels_last /
contiguous, and one JSON line. On a CPU without native bf16, bf16 runs emulated (slow, not what
``auto`` picks); give ``--precisions fp32`` there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ccvae.config import build_config
from ccvae.data import load_dataset, resolve_data_path
from ccvae.hardware import cpu_summary
from ccvae.train import Trainer

FORMATS = ("contiguous", "channels_last")  # the two layouts; "auto" picks one of them


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="quick-v2,quick-v3")
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--data", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every preset, e.g. model.norm=instance")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = load_dataset(resolve_data_path(args.data), "cpu")
    trainers: dict[tuple[str, str, str], Trainer] = {}
    for preset in args.presets.split(","):
        for precision in args.precisions.split(","):
            for fmt in FORMATS:
                cfg = build_config(preset, overrides=[*args.set, f"train.memory_format={fmt}",
                                                           f"train.precision={precision}"])
                trainers[(preset, precision, fmt)] = Trainer(cfg, data, "/nonexistent", torch.device("cpu"), quiet=True)
    times: dict[tuple[str, str, str], list[float]] = {k: [] for k in trainers}
    orders = {k: tr.epoch_order(0) for k, tr in trainers.items()}
    B = next(iter(trainers.values())).local_batch

    def steps(key: tuple[str, str, str], first: int, n: int) -> None:
        for i in range(first, first + n):
            trainers[key].train_step(orders[key][i * B:(i + 1) * B])  # advances the trainer's step to i + 1

    for key in trainers:
        steps(key, 0, 3)  # warm-up: oneDNN picks and caches its kernels
    for r in range(args.repeats):
        for key in trainers:
            t = time.perf_counter()
            steps(key, 3 + r * args.steps, args.steps)
            times[key].append((time.perf_counter() - t) / args.steps)
    print(f"machine: {cpu_summary()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print("| preset | precision | contiguous ms | channels_last ms | ratio |\n|---|---|---|---|---|")
    out = []
    for preset in args.presets.split(","):
        for precision in args.precisions.split(","):
            c, cl = (statistics.median(times[(preset, precision, f)]) for f in FORMATS)
            print(f"| {preset} | {precision} | {1000 * c:.1f} | {1000 * cl:.1f} | {cl / c:.3f} |")
            out.append({"preset": preset, "precision": precision, "contiguous_ms": 1000 * c,
                        "channels_last_ms": 1000 * cl, "ratio": cl / c})
    print(json.dumps({"steps": args.steps, "repeats": args.repeats, "set": args.set, "rows": out}))


if __name__ == "__main__":
    main()
