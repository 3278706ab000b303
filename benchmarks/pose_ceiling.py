"""How much pose a probe can read at all: the evaluation's pose task fitted on the images themselves.

    python benchmarks/pose_ceiling.py [--data sprites60.npz] [RUN_DIR ...]

``ccvae evaluate`` scores "pose from z" by training its classifier (178 poses) on all poses of 80 test
characters and scoring it on the other 20. This script fits the same classifier, with the same settings,
split and seed, on the pixels of those images (all 10,800, and 2x2-averaged), so a run's pose from z,
from its z mean and from s can be read against what the images carry for this probe. It also counts
pose classes whose images are identical in every test character (no probe can tell those apart).
Runs given are listed beside it from their ``eval/metrics.json``. Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ccvae.data.dataset import SpritesDataset
from ccvae.evaluate.probes import fit_classifier
from ccvae.evaluate.runner import EvalSettings, probe_splits
from ccvae.hardware import resolve_precision


def identical_pose_share(images: torch.Tensor) -> float:
    """Share of the (R, P, ...) images' poses that equal another pose's image in every character."""
    flat = images.flatten(2)  # (R, P, D)
    same = torch.ones(flat.shape[1], flat.shape[1], dtype=torch.bool)
    for x in flat:  # one character at a time: (P, D)
        same &= (x[:, None] == x[None]).all(-1)
    return float((same.sum(1) > 1).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run folders evaluated by ccvae evaluate, listed beside the ceiling")
    p.add_argument("--data", default="../shared/data/sprites/sprites60.npz")
    args = p.parse_args()
    settings = EvalSettings()
    probe = replace(settings.probe, precision=resolve_precision(settings.probe.precision, torch.device("cpu")))
    data = SpritesDataset.load(args.data)
    R, Rt, P = data.n_characters, len(data.rows("test")), data.n_poses
    mask = probe_splits(R, Rt, P, settings.train_share, settings.seed).pose  # (Rt, P)
    test_rows = data.rows("test").cpu()
    images = torch.stack([data.gather(r.repeat(P), torch.arange(P)).cpu() for r in test_rows])  # (Rt, P, 3, 60, 60)
    labels = torch.arange(P)[None, :].expand(Rt, P)
    inputs = {"pixels (10,800)": images.flatten(2),
              "pixels 2x2-averaged (2,700)": F.avg_pool2d(images.flatten(0, 1), 2).view(Rt, P, -1)}
    results = {}
    print("| input | train acc % | test acc % | epochs | seconds |\n|---|---|---|---|---|")
    for name, x in inputs.items():
        t0 = time.perf_counter()
        # The evaluation's pose classifier: standardised inputs, its seed (settings.seed + 2).
        res = fit_classifier(x[mask], labels[mask], x[~mask], labels[~mask], P, probe, settings.seed + 2, True)
        sec = time.perf_counter() - t0
        results[name] = {"train_acc": res.train_acc, "test_acc": res.test_acc, "epochs": res.epochs}
        print(f"| {name} | {100 * res.train_acc:.1f} | {100 * res.test_acc:.1f} | {res.epochs} | {sec:.0f} |")
    for run in args.runs:
        pose = json.loads((Path(run) / "eval" / "metrics.json").read_text())["classifiers"]["pose"]
        for latent in ("z", "z_mean", "s"):
            r = pose[latent]
            print(f"| {run}: {latent} | {100 * r['train_acc']:.1f} | {100 * r['test_acc']:.1f} | {r['epochs']} | |")
    share = identical_pose_share(images)
    print(f"\nposes whose image equals another pose's in all {Rt} test characters: {100 * share:.1f} %")
    print(json.dumps({"pixels": results, "identical_pose_share": share, "probe": probe.__dict__}))


if __name__ == "__main__":
    main()
