"""Standard disentanglement metrics (MIG, DCI, SAP) with disentanglement_lib's definitions and defaults.

NumPy and scikit-learn only (no torch). Arrays follow disentanglement_lib's layout: ``codes`` is
(num_codes, num_points), ``factors`` (num_factors, num_points) of integer values. The mutual
information and entropies are computed here from contingency counts, in nats, so the scores do not
drift with a library's version (a known complaint against disentanglement_lib).

References:
- Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of Disentangled
  Representations", ICML 2019; disentanglement_lib ``evaluation/metrics/{mig,dci,sap_score,utils}.py``.
- MIG: Chen et al., "Isolating Sources of Disentanglement in VAEs", NeurIPS 2018.
- DCI: Eastwood & Williams, "A Framework for the Quantitative Evaluation of Disentangled
  Representations", ICLR 2018 (with disentanglement_lib's gradient-boosted trees).
- SAP: Kumar et al., "Variational Inference of Disentangled Latent Concepts from Unlabeled
  Observations", ICLR 2018.
"""

from __future__ import annotations

import numpy as np

from ccvae.workers import parallel_map

NUM_BINS = 20  # disentanglement_lib's default histogram discretisation


def discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Per code, the index of its equal-width histogram bin (``utils.make_discretizer``, ``_histogram_discretize``)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for i, row in enumerate(codes):
        edges = np.histogram(row, num_bins)[1][:-1]
        out[i] = np.digitize(row, edges)
    return out


def _labels(v: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense labels 0..n-1 of a discrete variable's values, and n."""
    _, inv = np.unique(v, return_inverse=True)
    inv = inv.ravel()
    return inv, int(inv.max()) + 1 if len(inv) else 0


def _mi_of_labels(xi: np.ndarray, nx: int, yi: np.ndarray, ny: int) -> float:
    """Mutual information (nats) from dense labels, through their contingency table."""
    joint = np.bincount(xi * ny + yi, minlength=nx * ny).reshape(nx, ny) / len(xi)
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * (np.log(joint[nz]) - np.log((px @ py)[nz]))))


def mutual_info(x: np.ndarray, y: np.ndarray) -> float:
    """Mutual information (nats) of two discrete variables from their contingency table."""
    return _mi_of_labels(*_labels(x), *_labels(y))


def entropy(y: np.ndarray) -> float:
    """Entropy (nats) of a discrete variable."""
    _, counts = np.unique(y, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def mutual_info_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(num_codes, num_factors) mutual information (``utils.discrete_mutual_info``).

    Each variable's labels are found once, not once per pair (the evaluation's 192 codes x 10 factors took
    8.5 s of sorting that way)."""
    fac = [_labels(f) for f in factors]
    out = np.zeros((len(discrete_codes), len(factors)))
    for i, c in enumerate(discrete_codes):
        ci = _labels(c)
        for j, fj in enumerate(fac):
            out[i, j] = _mi_of_labels(*ci, *fj)
    return out


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict:
    """Mutual Information Gap: per factor, the gap between the two codes most informative about it,
    divided by the factor's entropy; averaged over factors (``mig._compute_mig``)."""
    return mig_from_mutual_info(mutual_info_matrix(discretize(codes, num_bins), factors), factors)


def mig_from_mutual_info(m: np.ndarray, factors: np.ndarray) -> dict:
    """MIG from a (num_codes, num_factors) mutual information matrix of discretised codes (``mig``): codes are
    discretised one by one, so the matrix of two code sets stacked is their two matrices stacked."""
    h = np.array([entropy(f) for f in factors])
    if m.shape[0] < 2:
        gaps = m[0] / h
    else:
        top = np.sort(m, axis=0)[::-1]
        gaps = (top[0] - top[1]) / h
    return {"mig": float(np.mean(gaps)), "per_factor": gaps.tolist(), "mutual_info": m.tolist(),
            "entropy": h.tolist()}


# -- DCI ----------------------------------------------------------------------------------------------
def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """scipy.stats.entropy(p.T, base) for each row of ``p`` (rows normalised)."""
    p = p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1) / np.log(base)


def disentanglement(importance: np.ndarray) -> float:
    """D of an importance matrix (num_codes, num_factors): 1 - entropy of each code's importances over
    the factors (base num_factors), weighted by the code's share of all importance."""
    per_code = 1.0 - _entropy_rows(importance + 1e-11, importance.shape[1])
    weights = importance if importance.sum() != 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def completeness(importance: np.ndarray) -> float:
    """C: 1 - entropy of each factor's importances over the codes (base num_codes), weighted by the
    factor's share of all importance."""
    per_factor = 1.0 - _entropy_rows(importance.T + 1e-11, importance.shape[0])
    weights = importance if importance.sum() != 0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


def _fit_trees(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
               seed: int) -> tuple[np.ndarray, float, float]:
    from sklearn.ensemble import GradientBoostingClassifier

    if len(np.unique(y_train)) < 2:  # nothing to learn: no code is important, the constant is exact
        return np.zeros(x_train.shape[1]), 1.0, float(np.mean(y_test == y_train[0]))
    model = GradientBoostingClassifier(random_state=seed)
    model.fit(x_train, y_train)
    return (np.abs(model.feature_importances_), float(np.mean(model.predict(x_train) == y_train)),
            float(np.mean(model.predict(x_test) == y_test)))


def importance_matrix(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray,
                      factors_test: np.ndarray, seed: int = 0, n_jobs: int = 1) -> tuple[np.ndarray, float, float]:
    """Gradient-boosted trees per factor (scikit-learn's defaults, as disentanglement_lib): their
    feature importances (num_codes, num_factors), mean train and test accuracy. ``n_jobs``: factors
    fitted in parallel processes (the trees themselves are single-threaded)."""
    # Factors with the most values first: a K-valued factor grows K trees a stage, and the 13 frames' alone took a
    # third of the evaluation's DCI (20.6 of 64 s); started last, it left one process idle for most of it.
    n_factors = factors_train.shape[0]
    order = sorted(range(n_factors), key=lambda j: -len(np.unique(factors_train[j])))
    done = parallel_map(_fit_trees, [(codes_train.T, factors_train[j], codes_test.T, factors_test[j], seed)
                                     for j in order], n_jobs)
    fits = [done[order.index(j)] for j in range(n_factors)]
    imp = np.stack([f[0] for f in fits], axis=1)
    return imp, float(np.mean([f[1] for f in fits])), float(np.mean([f[2] for f in fits]))


def dci(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
        seed: int = 0, n_jobs: int = 1) -> dict:
    """Disentanglement, completeness and informativeness (test accuracy of the trees) (``dci._compute_dci``)."""
    imp, train_acc, test_acc = importance_matrix(codes_train, factors_train, codes_test, factors_test, seed, n_jobs)
    return {"disentanglement": disentanglement(imp), "completeness": completeness(imp),
            "informativeness_train": train_acc, "informativeness_test": test_acc, "importance": imp.tolist()}


# -- SAP ----------------------------------------------------------------------------------------------
def sap(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
        continuous_factors: bool = False) -> dict:
    """Separated Attribute Predictability (``sap_score``): per (code, factor), how well the code alone
    predicts the factor (a 1-D linear SVM's test accuracy, C 0.01, balanced classes; or the squared
    correlation for continuous factors); per factor the gap between the best two codes, averaged."""
    return sap_from_scores(sap_scores(codes_train, factors_train, codes_test, factors_test, continuous_factors))


def sap_scores(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
               continuous_factors: bool = False, n_jobs: int = 1) -> np.ndarray:
    """SAP's (num_codes, num_factors) score matrix. Each code is scored alone, so the matrix of two code sets
    stacked is their two matrices stacked. ``n_jobs``: codes scored in that many processes (``workers.parallel_map``)."""
    # A few chunks of codes per process, not one job per code: each job carries all the factors (0.4 MB at the
    # evaluation's 3,000 + 2,000 images), and a code set has 64 to 1,024 codes.
    chunks = [c for c in np.array_split(np.arange(codes_train.shape[0]), 4 * max(n_jobs, 1)) if len(c)]
    done = parallel_map(_sap_rows, [(codes_train[c], factors_train, codes_test[c], factors_test, continuous_factors)
                                    for c in chunks], n_jobs)
    return np.array([row for rows in done for row in rows]).reshape(codes_train.shape[0], factors_train.shape[0])


def _sap_rows(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
              continuous_factors: bool) -> list[list[float]]:
    """``_sap_row`` for each of a chunk of codes."""
    return [_sap_row(a, factors_train, b, factors_test, continuous_factors)
            for a, b in zip(codes_train, codes_test, strict=True)]


def _sap_row(code_train: np.ndarray, factors_train: np.ndarray, code_test: np.ndarray, factors_test: np.ndarray,
             continuous_factors: bool) -> list[float]:
    """One code's SAP scores, one per factor."""
    from sklearn.svm import LinearSVC

    row = []
    for j in range(factors_train.shape[0]):
        if continuous_factors:
            c = np.cov(code_train, factors_train[j], ddof=1)
            row.append(c[0, 1] ** 2 / (c[0, 0] * c[1, 1]) if c[0, 0] > 1e-12 else 0.0)
        elif len(np.unique(factors_train[j])) < 2:  # a constant factor: every code predicts it alike
            row.append(float(np.mean(factors_test[j] == factors_train[j][0])))
        else:
            clf = LinearSVC(C=0.01, class_weight="balanced")
            clf.fit(code_train[:, None], factors_train[j])
            row.append(float(np.mean(clf.predict(code_test[:, None]) == factors_test[j])))
    return row


def sap_from_scores(score: np.ndarray) -> dict:
    """SAP from its score matrix (``sap_scores``)."""
    top = np.sort(score, axis=0)
    gap = top[-1] - top[-2] if score.shape[0] > 1 else top[-1]
    return {"sap": float(np.mean(gap)), "per_factor": gap.tolist(), "score": score.tolist()}
