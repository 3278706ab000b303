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


def test_stacked_code_sets_score_as_their_matrices_stacked():
    """MIG and SAP score each code alone, so the evaluation builds s + z's matrices from s's and z's: that must
    equal scoring the concatenated codes, and the pairwise mutual information; SAP in two processes equals one."""
    ys = _identity_data(n=1200, n_factors=3)
    rng = np.random.default_rng(2)
    a = np.vstack([ys[:2] + 0.3 * rng.normal(size=(2, 1200)), rng.normal(size=(2, 1200))])
    b = np.vstack([ys[2:] + 0.3 * rng.normal(size=(1, 1200)), rng.normal(size=(1, 1200))])
    both = np.vstack([a, b])
    mi_a, mi_b = (metrics.mutual_info_matrix(metrics.discretize(c), ys) for c in (a, b))
    mi_both = metrics.mutual_info_matrix(metrics.discretize(both), ys)
    np.testing.assert_allclose(mi_both, np.vstack([mi_a, mi_b]))
    disc = metrics.discretize(both)
    pairwise = [[metrics.mutual_info(c, f) for f in ys] for c in disc]
    np.testing.assert_allclose(mi_both, pairwise, rtol=1e-12)
    assert metrics.mig_from_mutual_info(np.vstack([mi_a, mi_b]), ys) == metrics.mig(both, ys)
    tr, te = slice(0, 800), slice(800, None)
    sc = [metrics.sap_scores(c[:, tr], ys[:, tr], c[:, te], ys[:, te], n_jobs=j) for c, j in ((a, 2), (b, 1))]
    whole = metrics.sap(both[:, tr], ys[:, tr], both[:, te], ys[:, te])
    assert metrics.sap_from_scores(np.vstack(sc)) == whole
    assert metrics.sap_scores(both[:, tr], ys[:, tr], both[:, te], ys[:, te], n_jobs=2).tolist() == whole["score"]
    assert whole["sap"] > 0.1  # the planted codes stand out


def test_dci_importance_columns_follow_the_factors():
    """The trees fit factors in order of their number of values (largest first); the importance matrix must
    still have one column per factor in the given order: code j holds factor j."""
    rng = np.random.default_rng(3)
    ys = np.stack([rng.integers(0, k, size=900) for k in (2, 7, 3, 5)])  # fitted in the order 1, 3, 2, 0
    codes = ys.astype(float) + 0.05 * rng.normal(size=ys.shape)
    imp, _, test_acc = metrics.importance_matrix(codes[:, :600], ys[:, :600], codes[:, 600:], ys[:, 600:], n_jobs=2)
    assert imp.argmax(0).tolist() == [0, 1, 2, 3] and test_acc > 0.95
