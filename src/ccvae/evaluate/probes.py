"""Probes of the latent spaces: the reference run's classifier and predictor MLPs.

A probe is trained on one set and scored on another it never saw. Training stops when the
loss on a held-out tenth of the training set stops improving (or at ``max_epochs``); the
curves are kept for the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


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
    max_epochs: int = 30
    patience: int = 3  # epochs without improvement of the held-out loss before stopping
    batch_size: int = 512
    lr: float = 2e-3
    holdout: float = 0.1  # share of the training set used to decide when to stop
    curve_samples: int = 10_000  # training samples scored each epoch for the curves (all at the end)


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
        with torch.no_grad():
            return torch.cat([self.model((x[i:i + 4096] - self.mean) / self.std) for i in range(0, len(x), 4096)])


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, classify: bool) -> tuple[float, float | None]:
    model.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), 4096):
            out = model(x[i:i + 4096])
            total += loss_fn(out, y[i:i + 4096]).item() * len(out)
            if classify:
                correct += (out.argmax(1) == y[i:i + 4096]).sum().item()
    n = max(len(x), 1)
    return total / n, (correct / n if classify else None)


def train_probe(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                y_test: torch.Tensor, classify: bool, settings: ProbeSettings, seed: int) -> ProbeResult:
    """Train ``model`` with Adam on (x_train, y_train); score on (x_test, y_test), which it never sees.

    Inputs are standardised with the training set's statistics. Loss: cross-entropy (classify)
    or MSE (regression, on the raw targets).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in model.modules():  # re-initialise from the seed, whatever came before
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    perm = torch.randperm(len(xtr), generator=g)
    n_hold = max(1, int(len(xtr) * settings.holdout))
    hold, fit = perm[:n_hold], perm[n_hold:]
    loss_fn = F.cross_entropy if classify else F.mse_loss
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    curves: dict[str, list[float]] = {"train_loss": [], "holdout_loss": [], "test_loss": []}
    if classify:
        curves.update(train_acc=[], test_acc=[])
    best, best_state, bad, epochs = float("inf"), None, 0, 0
    bs = min(settings.batch_size, max(2, len(fit)))
    curve_idx = fit[:settings.curve_samples]  # fit is already a random order
    for _epoch in range(settings.max_epochs):
        model.train()
        order = fit[torch.randperm(len(fit), generator=g)]
        for i in range(0, len(order) - bs + 1, bs):  # drop the ragged tail: BatchNorm needs > 1 sample
            idx = order[i:i + bs]
            loss = loss_fn(model(xtr[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epochs += 1
        tl, ta = _evaluate(model, xtr[curve_idx], y_train[curve_idx], loss_fn, classify)
        hl, _ = _evaluate(model, xtr[hold], y_train[hold], loss_fn, classify)
        sl, sa = _evaluate(model, xte, y_test, loss_fn, classify)
        curves["train_loss"].append(tl)
        curves["holdout_loss"].append(hl)
        curves["test_loss"].append(sl)
        if classify:
            curves["train_acc"].append(ta)
            curves["test_acc"].append(sa)
        if hl < best - 1e-6:
            best, bad = hl, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= settings.patience:
                break
    model.load_state_dict(best_state)  # the epoch the held-out loss picked
    tl, ta = _evaluate(model, xtr, y_train, loss_fn, classify)
    sl, sa = _evaluate(model, xte, y_test, loss_fn, classify)
    return ProbeResult(model, tl, sl, ta, sa, epochs, curves, mean, std)


def fit_classifier(x_train, y_train, x_test, y_test, n_classes: int, settings: ProbeSettings, seed: int) -> ProbeResult:
    return train_probe(Classifier(x_train.shape[1], n_classes), x_train, y_train, x_test, y_test, True, settings, seed)


def fit_predictor(x_train, y_train, x_test, y_test, settings: ProbeSettings, seed: int) -> ProbeResult:
    return train_probe(Predictor(x_train.shape[1], y_train.shape[1]), x_train, y_train, x_test, y_test, False,
                       settings, seed)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - SSE / SST over all dims (0: no better than the mean, 1: perfect)."""
    sse = ((pred - target) ** 2).sum()
    sst = ((target - target.mean(0)) ** 2).sum().clamp_min(1e-12)
    return float(1 - sse / sst)
