"""Ground-truth swap error: 2D Sprites draws every character in the same 178 poses, so the true
answer of dec(z of B in pose k, s of A in another pose) is the image of A in pose k."""

from __future__ import annotations

import math

import torch

from ccvae.data.dataset import SpritesDataset
from ccvae.evaluate.encode import Encodings, decode_batched
from ccvae.model import CCVAE


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def per_image_mse(model: CCVAE, data: SpritesDataset, z: torch.Tensor, s: torch.Tensor, rows: torch.Tensor,
                 poses: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per-image MSE of decode(z, s) against the dataset images (rows, poses): (N,)."""
    out = []
    for i in range(0, len(z), batch_size):
        x_hat = decode_batched(model, z[i:i + batch_size], s[i:i + batch_size], batch_size)
        x = data.gather(rows[i:i + batch_size].to(data.device), poses[i:i + batch_size].to(data.device)).cpu()
        out.append(((x_hat - x) ** 2).flatten(1).mean(1))
    return torch.cat(out)


def draw_swaps(R: int, P: int, n_swaps: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(a, b, k, k_other), each (n_swaps,): target character A, z's character B != A, pose k, and the other pose
    k' != k that A's s comes from."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(R, (n_swaps,), generator=g)
    b = (a + torch.randint(1, R, (n_swaps,), generator=g)) % R  # B != A
    k = torch.randint(P, (n_swaps,), generator=g)
    k_other = (k + torch.randint(1, P, (n_swaps,), generator=g)) % P  # A's s comes from another pose
    return a, b, k, k_other


def swap_metrics(model: CCVAE, data: SpritesDataset, enc: Encodings, n_swaps: int, seed: int,
                 batch_size: int = 512, n_reconstruct: int | None = None, diagnostics: bool = True) -> dict:
    """MSE / PSNR of ``n_swaps`` random ground-truth swaps among ``enc``'s characters, and of plain
    reconstruction of all their images (or of ``n_reconstruct`` of them drawn at random). PSNR is computed
    from the mean MSE. ``diagnostics``: also the reference swaps that say where the swap's error comes from."""
    R, P = enc.z.shape[:2]
    a, b, k, k_other = draw_swaps(R, P, n_swaps, seed)
    swap = per_image_mse(model, data, enc.z[b, k], enc.s[a, k_other], enc.rows[a], k, batch_size)
    # Plain reconstruction of every image of these characters (or a seeded draw of them): decode(z_mu, s) of the image.
    rr = enc.rows.repeat_interleave(P)
    pp = torch.arange(P).repeat(R)
    zz, ss = enc.z.flatten(0, 1), enc.s.flatten(0, 1)
    if n_reconstruct is not None and n_reconstruct < R * P:
        pick = torch.randperm(R * P, generator=torch.Generator().manual_seed(seed + 1))[:n_reconstruct]
        rr, pp, zz, ss = rr[pick], pp[pick], zz[pick], ss[pick]
    rec = per_image_mse(model, data, zz, ss, rr, pp, batch_size)
    out = {"n_swaps": n_swaps, "swap_mse": swap.mean().item(), "swap_psnr": psnr(swap.mean().item()),
           "reconstruction_mse": rec.mean().item(), "reconstruction_psnr": psnr(rec.mean().item()),
           "n_reconstructed": len(rec)}
    if not diagnostics:
        return out
    # Reference point: the swap with z and s from A itself in pose k' (what "no transfer of pose" scores).
    no_pose = per_image_mse(model, data, enc.z[a, k_other], enc.s[a, k_other], enc.rows[a], k, batch_size)
    # Where the swap's error comes from: the same swap within one character (A's own z of pose k; what the
    # forward cycle trains), and with B's z replaced by pose k's z mean over every character but A (a pose code
    # with no one's identity in it). swap < same character means z carries the character as well as the pose.
    same_char = per_image_mse(model, data, enc.z[a, k], enc.s[a, k_other], enc.rows[a], k, batch_size)
    z_sum = enc.z.sum(0)  # (P, style_dim)
    pose_code = (z_sum[k] - enc.z[a, k]) / (R - 1)  # (n_swaps, style_dim); R >= 2, as B != A needs
    mean_code = per_image_mse(model, data, pose_code, enc.s[a, k_other], enc.rows[a], k, batch_size)
    return {
        **out,
        "wrong_pose_mse": no_pose.mean().item(),
        "wrong_pose_psnr": psnr(no_pose.mean().item()),
        "same_character_mse": same_char.mean().item(),
        "same_character_psnr": psnr(same_char.mean().item()),
        "mean_pose_code_mse": mean_code.mean().item(),
        "mean_pose_code_psnr": psnr(mean_code.mean().item()),
    }
