"""Where a trained run's ground-truth swap loses its error: s or z, and in which actions.

    python benchmarks/swap_sources.py RUN_DIR [--data sprites60.npz] [--n-swaps 5000]

The swap dec(z of B in pose k, s of A in pose k') is scored against A in pose k (as ``ccvae
evaluate``, the same seed and swaps), beside the same swap with s taken elsewhere: from A's own
image in pose k (s that has seen the target image) and A's s averaged over all 178 poses. If
those three agree, s is not what holds the swap down. Then the swap and the same-character swap
(A's own z of pose k) per action of pose k, so a reader sees which poses z fails to carry across
characters. Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json

import torch

from ccvae.checkpoint import load_run
from ccvae.data.dataset import SpritesDataset
from ccvae.evaluate.disentanglement import ACTION_NAMES, actions_of
from ccvae.evaluate.encode import encode_rows
from ccvae.evaluate.runner import EvalSettings
from ccvae.evaluate.swap import draw_swaps, per_image_mse, psnr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--data", default="../shared/data/sprites/sprites60.npz")
    p.add_argument("--n-swaps", type=int, default=5000)
    args = p.parse_args()
    model, _ = load_run(args.run)
    model.eval()
    data = SpritesDataset.load(args.data)
    enc = encode_rows(model, data, data.rows("test").cpu(), 512)
    R, P = enc.z.shape[:2]
    # The evaluation's draw (swap_metrics with EvalSettings' seed + 5), so the first row equals metrics.json's swap.
    n = args.n_swaps
    a, b, k, k_other = draw_swaps(R, P, n, EvalSettings().seed + 5)

    def mse(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # (n,) per swap, against A in pose k
        return per_image_mse(model, data, z, s, enc.rows[a], k, 512)

    swap = mse(enc.z[b, k], enc.s[a, k_other])
    same = mse(enc.z[a, k], enc.s[a, k_other])
    sources = {"s of A in another pose (the evaluation's swap)": swap,
               "s of A in pose k (the target image itself)": mse(enc.z[b, k], enc.s[a, k]),
               "s of A averaged over its 178 poses": mse(enc.z[b, k], enc.s.mean(1)[a])}
    action = torch.as_tensor(actions_of(data))[k]  # (n,)
    print("| swap with z of B in pose k and ... | PSNR dB |\n|---|---|")
    for name, err in sources.items():
        print(f"| {name} | {psnr(err.mean().item()):.2f} |")
    print("\n| action of pose k | swaps | swap dB | same character dB | gap dB |\n|---|---|---|---|---|")
    per_action = {}
    for i, name in enumerate(ACTION_NAMES):
        m = action == i
        if not m.any():
            continue
        sw, sc = psnr(swap[m].mean().item()), psnr(same[m].mean().item())
        per_action[name] = {"n": int(m.sum()), "swap_psnr": sw, "same_character_psnr": sc}
        print(f"| {name} | {int(m.sum())} | {sw:.2f} | {sc:.2f} | {sc - sw:.2f} |")
    print(json.dumps({"run": args.run, "n_swaps": n,
                      "s_sources_psnr": {k_: psnr(v.mean().item()) for k_, v in sources.items()},
                      "same_character_psnr": psnr(same.mean().item()), "per_action": per_action}))


if __name__ == "__main__":
    main()
