"""How much a trained run's sampled z depends on s: a fresh critic, scored on characters it never saw.

    python benchmarks/dependence_of_z.py RUN_DIR [RUN_DIR ...] [--data sprites60.npz] [--seed 0] [--epochs 30]

Every pose of the 100 test characters is encoded; the characters are split 70 / 30 (``--seed``). A critic of the
shape ``train.independence_coef`` trains (``ccvae.methods.independence.LatentCritic``) learns, on the 70, to tell a
matched pair (sampled z of character c in pose k, s of c in another pose k') from a mismatched one (the same z, s of
another character in pose k'), a fresh draw of z, k' and the other character every step; it is scored on the 30
held-out characters' pairs, drawn once. Every character is drawn in the same 178 poses, so a critic above 50 % on
unseen characters finds the character in z, which a swap takes from the pose donor. Its mean logit on the matched
pairs is a density-ratio estimate of I(z; s) (Kim and Mnih 2018, Sec. 3) in nats, as good as the critic; the
accuracy is the plainer figure. Unlike the 100-way identity probe, the critic has s beside z, so it can find a
trace of the character that no single identity is told apart by. Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from ccvae.checkpoint import load_run
from ccvae.data.dataset import SpritesDataset
from ccvae.evaluate.encode import encode_rows
from ccvae.methods.independence import LatentCritic


def _pairs(z: torch.Tensor, s: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n matched and n mismatched (z, s) rows from z, s (R, P, d): z of (c, k) beside s of (c, k') or of (c', k'),
    c' != c, k' != k. Returns z (2n, d_z), s (2n, d_s), labels (2n,)."""
    R, P = z.shape[:2]
    c = torch.randint(R, (2 * n,), generator=g)
    k = torch.randint(P, (2 * n,), generator=g)
    k2 = (k + torch.randint(1, P, (2 * n,), generator=g)) % P
    other = (c + torch.randint(1, R, (2 * n,), generator=g)) % R
    c_s = torch.cat([c[:n], other[n:]])
    labels = torch.cat([torch.ones(n), torch.zeros(n)])
    return z[c, k], s[c_s, k2], labels


def dependence(run: str, data: SpritesDataset, seed: int, epochs: int) -> dict:
    """Held-out accuracy and I(z; s) estimate of a critic trained on 70 of the test characters (sampled z)."""
    model, _ = load_run(run)
    enc = encode_rows(model, data, data.rows("test").cpu(), 512)
    R = enc.z.shape[0]
    perm = torch.randperm(R, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:round(0.7 * R)], perm[round(0.7 * R):]
    g = torch.Generator().manual_seed(seed + 1)  # the pairs; z draws come from enc.z_sample's own seeds
    torch.manual_seed(seed)
    critic = LatentCritic(enc.z.shape[2], enc.s.shape[2])
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    steps = epochs * 100
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for step in range(steps):
        z_draw = enc.z_sample(seed + 1 + step)[tr]  # (70, P, d_z): a fresh draw each step, as the decoder sees
        z, s, y = _pairs(z_draw, enc.s[tr], 256, g)
        loss = F.binary_cross_entropy_with_logits(critic(z, s), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    critic.eval()
    with torch.no_grad():
        z_te = enc.z_sample(seed + 1 + steps)[te]  # a draw no training step used
        z, s, y = _pairs(z_te, enc.s[te], 20_000, g)
        logits = critic(z, s)
    n = len(y) // 2
    return {"run": run, "held_out_characters": len(te), "pairs": len(y),
            "accuracy": ((logits > 0).float() == y).float().mean().item(),
            "mi_nats": logits[:n].mean().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data", default="../shared/data/sprites/sprites60.npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30, help="hundreds of critic steps (512 pairs each)")
    args = p.parse_args()
    data = SpritesDataset.load(args.data)
    out = []
    print("| run | held-out critic accuracy % | I(z; s) estimate, nats |\n|---|---|---|")
    for run in args.runs:
        r = dependence(run, data, args.seed, args.epochs)
        out.append(r)
        print(f"| {run} | {100 * r['accuracy']:.1f} | {r['mi_nats']:.3f} |", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
