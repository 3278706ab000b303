"""Probes of the latent spaces: the reference run's classifier and predictor MLPs.

A probe is trained on one set and scored on another it never saw. It must fit: Adam with a
cosine learning-rate schedule over ``max_epochs``, stopped early only once its training metric
(accuracy for a classifier, loss for a predictor) has stopped improving for ``patience`` epochs
and the schedule is at least ``stop_after`` through (a plateau at a high learning rate is not the end).
An underfit probe under-reports what a latent holds, which flatters z and undersells s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ccvae.hardware import autocast, resolve_precision


class Classifier(nn.Module):
    """d -> 256 (BatchNorm, LeakyReLU 0.2) -> 256 (BatchNorm, LeakyReLU 0.2) -> classes (reference run)."""

    def __init__(self, d_in: int, n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, n_classes) logits


class Predictor(nn.Module):
    """d_in -> 256 (BatchNorm, ReLU) -> 256 (BatchNorm, ReLU) -> d_out (reference run's predictor)."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, d_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class ProbeSettings:
    max_epochs: int = 40  # the cosine schedule's length
    patience: int = 5  # epochs without a better training metric before stopping early
    # ... but not before this share of the schedule, where its learning rate has fallen to half: at the full rate a
    # probe's training accuracy can stall for five epochs and rise again as the rate falls. Seen on a quick-network
    # run: pose from the z mean flat at 86 % over epochs 4-9, 89 % by epoch 31; a probe stopped at epoch 9 scored
    # 86.0 % on test, one that went on 88.9 % (the two differed only in float rounding, at 2 threads and at 1).
    stop_after: float = 0.5
    min_delta: float = 1e-3  # what counts as better (accuracy points / relative loss)
    batch_size: int = 1024
    lr: float = 2e-3
    # Training and test samples scored each epoch for the curves (and, training ones, the stop rule), in the
    # training precision; the final scores take every sample in fp32. On the 672-identity task (96k training
    # and 24k test images) scoring both whole sets in fp32 took a quarter of each epoch's time.
    curve_samples: int = 10_000
    device: str = "cpu"  # where the probe trains (the run's evaluation device)
    # Training steps (and the per-epoch curves) under bf16 autocast where the device does bf16 natively
    # (``auto``), fp32 otherwise; the reported scores are always fp32. bf16 halves the identity probes'
    # time on an AVX512-BF16 CPU (1.0 -> 0.45 s an epoch of 95,000 samples): the quick run's evaluation
    # took 276 s on a 2-core Zen 5, about 510 s on a 2-core Intel Xeon (README).
    precision: str = "auto"


@dataclass
class ProbeResult:
    model: nn.Module
    train_loss: float
    test_loss: float
    train_acc: float | None = None
    test_acc: float | None = None
    epochs: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)
    mean: torch.Tensor | None = None  # input standardisation, kept with the model
    std: torch.Tensor | None = None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        dev = self.mean.device
        with torch.no_grad():
            return torch.cat([self.model((x[i:i + 4096].to(dev) - self.mean) / self.std).cpu()
                              for i in range(0, len(x), 4096)])


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, classify: bool,
              precision: str = "fp32") -> tuple[float, float | None]:
    model.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), 4096):
            with autocast(x.device, precision):
                out = model(x[i:i + 4096]).float()
            total += loss_fn(out, y[i:i + 4096]).item() * len(out)
            if classify:
                correct += (out.argmax(1) == y[i:i + 4096]).sum().item()
    n = max(len(x), 1)
    return total / n, (correct / n if classify else None)


def train_probe(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                y_test: torch.Tensor, classify: bool, settings: ProbeSettings, seed: int,
                standardize: bool = True, train_sigma: torch.Tensor | None = None) -> ProbeResult:
    """Train ``model`` with Adam on (x_train, y_train); score on (x_test, y_test), which it never sees.

    ``standardize``: scale each input dimension by the training set's mean and std (a dimension the
    decoder never reads, with a tiny spread, is then blown up to unit variance; ``False`` probes the
    raw values). ``train_sigma`` (same shape as ``x_train``): train on a fresh draw x + sigma * eps at
    every step, as the decoder sees a fresh z each time; otherwise a fixed sample's noise would be
    memorised (a probe reached 62 % train accuracy on pure noise that way). Loss: cross-entropy
    (classify) or MSE (regression, on the raw targets).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in model.modules():  # re-initialise from the seed, whatever came before
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    dev = torch.device(settings.device)
    model.to(dev)
    x_train, y_train, x_test, y_test = (t.to(dev) for t in (x_train, y_train, x_test, y_test))
    sig = None if train_sigma is None else train_sigma.to(dev)
    # With fresh draws, statistics and the training score come from one fixed draw of the training set:
    # the means alone would make a collapsed dimension's tiny spread the scale of its unit-variance noise.
    x_fixed = x_train if sig is None else x_train + sig * torch.randn(x_train.shape, generator=g).to(dev)
    if standardize:
        mean, std = x_fixed.mean(0), x_fixed.std(0).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(x_train.shape[1], device=dev), torch.ones(x_train.shape[1], device=dev)
    xtr, xte, xfix = (x_train - mean) / std, (x_test - mean) / std, (x_fixed - mean) / std
    sig = None if sig is None else sig / std
    loss_fn = F.cross_entropy if classify else F.mse_loss
    precision = resolve_precision(settings.precision, dev)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    # At least ~20 steps an epoch: a small set with the full batch would take too few steps to fit.
    bs = max(2, min(settings.batch_size, len(xtr) // 20))
    steps_per_epoch = max(1, len(xtr) // bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.max_epochs * steps_per_epoch)
    curves: dict[str, list[float]] = {"train_loss": [], "test_loss": []}
    if classify:
        curves.update(train_acc=[], test_acc=[])
    curve_idx = torch.randperm(len(xtr), generator=g)[:settings.curve_samples].to(dev)
    x_curve, y_curve = xfix[curve_idx], y_train[curve_idx]
    # The test subset from its own generator, so the training order is the same whatever the test set's size.
    test_idx = (torch.randperm(len(xte), generator=torch.Generator().manual_seed(seed + 1))[:settings.curve_samples]
                if len(xte) > settings.curve_samples else torch.arange(len(xte))).to(dev)
    xte_curve, yte_curve = xte[test_idx], y_test[test_idx]
    best, bad, epochs = -float("inf"), 0, 0
    for _epoch in range(settings.max_epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=g).to(dev)
        for i in range(0, len(order) - bs + 1, bs):  # drop the ragged tail: BatchNorm needs > 1 sample
            idx = order[i:i + bs]
            xb = xtr[idx] if sig is None else xtr[idx] + sig[idx] * torch.randn(len(idx), xtr.shape[1], generator=g).to(dev)
            with autocast(dev, precision):
                out = model(xb)
            loss = loss_fn(out.float(), y_train[idx])  # the loss in fp32 (bf16 logits lose the small differences)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epochs += 1
        tl, ta = _evaluate(model, x_curve, y_curve, loss_fn, classify, precision)
        sl, sa = _evaluate(model, xte_curve, yte_curve, loss_fn, classify, precision)
        curves["train_loss"].append(tl)
        curves["test_loss"].append(sl)
        if classify:
            curves["train_acc"].append(ta)
            curves["test_acc"].append(sa)
        # The stop rule looks at the training set only: the test set never steers the probe.
        score = ta if classify else -tl
        if score > best + settings.min_delta * (1 if classify else max(abs(best), 1e-12)):
            best, bad = score, 0
        else:
            bad += 1
            if bad >= settings.patience and epochs >= settings.stop_after * settings.max_epochs:
                break
    tl, ta = _evaluate(model, xfix, y_train, loss_fn, classify)
    sl, sa = _evaluate(model, xte, y_test, loss_fn, classify)
    return ProbeResult(model, tl, sl, ta, sa, epochs, curves, mean, std)


def fit_classifier(x_train, y_train, x_test, y_test, n_classes: int, settings: ProbeSettings, seed: int,
                   standardize: bool = True, train_sigma: torch.Tensor | None = None) -> ProbeResult:
    return train_probe(Classifier(x_train.shape[1], n_classes), x_train, y_train, x_test, y_test, True, settings, seed,
                       standardize, train_sigma)


def fit_predictor(x_train, y_train, x_test, y_test, settings: ProbeSettings, seed: int) -> ProbeResult:
    return train_probe(Predictor(x_train.shape[1], y_train.shape[1]), x_train, y_train, x_test, y_test, False,
                       settings, seed)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - SSE / SST over all dims (0: no better than the mean, 1: perfect)."""
    sse = ((pred - target) ** 2).sum()
    sst = ((target - target.mean(0)) ** 2).sum().clamp_min(1e-12)
    return float(1 - sse / sst)
