"""MIG, DCI and SAP against the known values of disentanglement_lib's own tests, and the partition table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ccvae import metrics


def _identity_data(n: int = 3000, n_factors: int = 10, seed: int = 0):
    """10 factors with values 1..10, drawn uniformly (disentanglement_lib's IdentityObservationsData)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 11, size=(n_factors, n))


def test_dci_on_hand_made_importance_matrices():
    diag = np.diag(5.0 * np.ones(5))
    assert metrics.disentanglement(diag) == pytest.approx(1.0) and metrics.completeness(diag) == pytest.approx(1.0)
    zero = np.zeros((5, 5))
    assert metrics.disentanglement(zero) == pytest.approx(0.0, abs=1e-6)
    assert metrics.completeness(zero) == pytest.approx(0.0, abs=1e-6)
    codes_dup = np.vstack([diag, diag])  # 10 codes, each factor in two of them
    assert metrics.disentanglement(codes_dup) == pytest.approx(1.0)
    assert metrics.completeness(codes_dup) == pytest.approx(1 - math.log(2) / math.log(10), abs=1e-6)
    factors_dup = np.hstack([diag, diag])  # each code holds two factors
    assert metrics.disentanglement(factors_dup) == pytest.approx(1 - math.log(2) / math.log(10), abs=1e-6)
    assert metrics.completeness(factors_dup) == pytest.approx(1.0)


def test_metrics_on_the_factors_themselves():
    ys = _identity_data()
    tr, te = slice(0, 2000), slice(2000, 3000)
    assert 0.9 <= metrics.mig(ys.astype(float), ys)["mig"] <= 1.0
    assert 0.9 <= metrics.sap(ys[:, tr].astype(float), ys[:, tr], ys[:, te].astype(float), ys[:, te],
                              continuous_factors=True)["sap"] <= 1.0
    d = metrics.dci(ys[:, tr].astype(float), ys[:, tr], ys[:, te].astype(float), ys[:, te], n_jobs=2)
    assert 0.9 <= d["disentanglement"] <= 1.0 and 0.9 <= d["completeness"] <= 1.0


def test_metrics_on_uninformative_codes():
    ys = _identity_data()
    zero = np.zeros_like(ys, dtype=float)
    assert metrics.mig(zero, ys)["mig"] <= 0.2
    assert metrics.sap(zero, ys, zero, ys, continuous_factors=True)["sap"] <= 0.2
    dup = np.repeat(ys.astype(float), 2, axis=0)  # every factor in two codes: no gap
    assert metrics.mig(dup, ys)["mig"] <= 0.1


def test_dci_on_per_code_permuted_values():
    """Each code holds its factor's values shuffled across the points: no code predicts any factor, the
    trees' importances are spread evenly, so D and C are at most 0.2."""
    ys = _identity_data(n=2000)
    rng = np.random.default_rng(1)
    codes = np.stack([rng.permutation(row) for row in ys]).astype(float)
    d = metrics.dci(codes[:, :1500], ys[:, :1500], codes[:, 1500:], ys[:, 1500:])
    assert d["disentanglement"] <= 0.2 and d["completeness"] <= 0.2


def test_mutual_info_and_entropy_exact():
    x = np.array([0, 0, 1, 1])
    assert metrics.entropy(x) == pytest.approx(math.log(2))
    assert metrics.mutual_info(x, x) == pytest.approx(math.log(2))
    assert metrics.mutual_info(x, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_partition_table_puts_factors_where_planted():
    from ccvae.evaluate.disentanglement import DisentanglementSettings, partition_table

    rng = np.random.default_rng(0)
    R, P = 40, 50
    ident = rng.integers(0, 3, size=(2, R))  # two identity factors, per character
    pose = rng.integers(0, 4, size=(2, P))  # two pose factors, per pose
    factors = np.concatenate([np.repeat(ident, P, axis=1), np.tile(pose, (1, R))])
    noise = lambda d: rng.normal(size=(d, R * P))  # noqa: E731
    s = np.concatenate([factors[:2] + 0.05 * noise(2), noise(3)])
    z = np.concatenate([factors[2:] + 0.05 * noise(2), noise(3)])
    names = ["i0", "i1", "p0", "p1"]
    import ccvae.evaluate.disentanglement as dmod
    saved = dmod.ATTRIBUTE_NAMES
    dmod.ATTRIBUTE_NAMES = ("i0", "i1")
    try:
        rows = partition_table({"s": s, "z": z}, factors, names, R, P, DisentanglementSettings())
    finally:
        dmod.ATTRIBUTE_NAMES = saved
    for r in rows[:2]:
        assert r["s_balanced_acc"] > 0.95 and r["z_balanced_acc"] < 0.6 and r["s_mi_share"] > 0.8
    for r in rows[2:]:
        assert r["z_balanced_acc"] > 0.95 and r["s_balanced_acc"] < 0.6 and r["z_mi_share"] > 0.8
