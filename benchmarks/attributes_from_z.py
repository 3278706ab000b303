"""Which of a character's seven attributes a trained run's sampled z (and s) carries.

    python benchmarks/attributes_from_z.py RUN_DIR [RUN_DIR ...] [--data sprites60.npz] [--seed 0]

Every pose of the 100 test characters is encoded; the characters are split 70 / 30 (``--seed``), and for
each attribute of ``sprites60.npz`` (``attributes``, constant within a character) the evaluation's MLP probe
is fitted on the 70 characters' images and scored on the other 30: from s, and from sampled z (a fresh draw
each training step, one draw at test, as the evaluation's sampled-z probes). Beside each: the majority
class's share of the 30 test characters. z carrying an attribute above that share is character appearance
that a swap would take from the pose donor. Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json

import torch

from ccvae.checkpoint import load_run
from ccvae.data.dataset import SpritesDataset
from ccvae.evaluate.encode import encode_rows
from ccvae.evaluate.probes import ProbeSettings, fit_classifier


def attribute_scores(run: str, data: SpritesDataset, seed: int) -> list[dict]:
    """Per attribute (``data.attributes``): majority share and test accuracy from s and from sampled z (30 held-out
    characters)."""
    if data.attributes is None:
        raise SystemExit(f"{data.source}: no 'attributes' array; this benchmark needs the packed sprites60.npz")
    model, _ = load_run(run)
    rows = data.rows("test").cpu()
    enc = encode_rows(model, data, rows, 512)
    R, P = enc.z.shape[:2]
    perm = torch.randperm(R, generator=torch.Generator().manual_seed(seed))
    n_train = round(0.7 * R)  # 70 of the 100 test characters
    tr, te = perm[:n_train], perm[n_train:]
    attrs = torch.from_numpy(data.attributes.astype("int64"))  # (N, 7), by dataset row
    sigma = torch.exp(0.5 * enc.z_logvar)
    z_test = enc.z_sample(seed + 1)[te].flatten(0, 1)
    settings = ProbeSettings(max_epochs=15)
    out = []
    for a in range(attrs.shape[1]):
        y = attrs[rows, a][:, None].expand(R, P)  # (R, P): constant within a character
        n_classes = int(attrs[:, a].max()) + 1
        row = {"attribute": a, "n_test_characters": len(te), "majority": torch.bincount(y[te].flatten()).max().item() / y[te].numel()}
        row["s"] = fit_classifier(enc.s[tr].flatten(0, 1), y[tr].flatten(), enc.s[te].flatten(0, 1),
                                  y[te].flatten(), n_classes, settings, seed).test_acc
        row["z_sampled"] = fit_classifier(enc.z[tr].flatten(0, 1), y[tr].flatten(), z_test, y[te].flatten(),
                                          n_classes, settings, seed, train_sigma=sigma[tr].flatten(0, 1)).test_acc
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data", default="../shared/data/sprites/sprites60.npz")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = SpritesDataset.load(args.data)
    results = {}
    print("| run | attribute | majority % | from s % | from sampled z % |\n|---|---|---|---|---|")
    for run in args.runs:
        results[run] = attribute_scores(run, data, args.seed)
        for r in results[run]:
            print(f"| {run} | {r['attribute']} | {100 * r['majority']:.1f} | {100 * r['s']:.1f} | "
                  f"{100 * r['z_sampled']:.1f} |", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
