"""How much of z the decoder can use: active units and the KL per dimension.

A dimension whose posterior mean barely moves across images (and whose sigma is ~1) is collapsed:
what its mean holds never survives sampling, so a probe of the mean can find information there that
the decoder is never given.
"""

from __future__ import annotations

import torch

# Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", Sec. 5.2: a unit u is
# active when Cov_x(E_{u ~ q(u|x)}[u]) > 0.01.
ACTIVE_THRESHOLD = 0.01


def latent_stats(mu: torch.Tensor, logvar: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> dict:
    """mu, logvar: (N, d) posterior parameters over a set of images.

    Returns the number of active units, which ones, the variance over images of each mean, the mean
    posterior sigma and the mean KL(q(z_i|x) || N(0, 1)) per dimension (nats).
    """
    mu, logvar = mu.double(), logvar.double()
    var_of_mean = mu.var(0, unbiased=False)  # (d,)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)  # (N, d)
    active = var_of_mean > threshold
    return {
        "active_units": int(active.sum()),
        "dims": int(mu.shape[1]),
        "active_threshold": threshold,
        "active": active.nonzero().flatten().tolist(),
        "var_of_mean": [round(v, 6) for v in var_of_mean.tolist()],
        "mean_sigma": [round(v, 4) for v in torch.exp(0.5 * logvar).mean(0).tolist()],
        "kl_per_dim": [round(v, 5) for v in kl.mean(0).tolist()],
        "kl_total": float(kl.sum(1).mean()),
    }
