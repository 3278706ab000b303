"""MIG, DCI, SAP and the partition table of s and z on the Sprites' ground-truth factors.

Factors of an image (character a, pose k): the character's 7 ``attributes`` (identity factors), and
the pose's action (spellcast, thrust, walk, slash, shoot, hurt), direction (up, left, down, right;
hurt is drawn facing down only) and frame within the animation (pose factors). A representation that
does what the paper claims holds every identity factor in s and none in z, every pose factor in z and
none in s.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ccvae import metrics
from ccvae.data.dataset import SpritesDataset
from ccvae.workers import parallel_map

ATTRIBUTE_NAMES = tuple(f"attribute_{i}" for i in range(7))
POSE_FACTORS = ("action", "direction", "frame")
HURT_CELL = 20  # the 21st animation cell, hurt, faces down only
ACTION_NAMES = ("spellcast", "thrust", "walk", "slash", "shoot", "hurt")  # the values of the action factor


@dataclass
class DisentanglementSettings:
    # Images drawn for SAP and DCI. disentanglement_lib draws 10,000 / 5,000; its gradient-boosted trees
    # take ~12 s per 6-valued factor on 1,000 points of 128 codes here (52 s for the 10 factors on two
    # cores), so DCI gets 600 / 600 points (and is
    # computed on s + sampled z only) to keep the metrics within a minute of evaluation.
    n_train: int = 3000  # SAP
    n_test: int = 2000  # SAP
    dci_train: int = 600
    dci_test: int = 600
    n_jobs: int = 0  # processes for DCI's trees, SAP's codes and the partition probes (0: workers.resolve_jobs)
    probe_share: float = 0.8  # characters whose images train the partition probes
    probe_images: int = 5000  # of their images, at most this many (a linear probe needs no more)
    seed: int = 0


def factor_names() -> list[str]:
    return [*ATTRIBUTE_NAMES, *POSE_FACTORS]


def actions_of(data: SpritesDataset) -> np.ndarray:
    """(P,) action of every pose, an index into ``ACTION_NAMES`` (four directions of an action share it)."""
    anim = data.animation.astype(np.int64)
    return np.where(anim == HURT_CELL, ACTION_NAMES.index("hurt"), anim // 4)


def factors_of(data: SpritesDataset, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(num_factors, R * P) integer factors of every pose of the characters ``rows``, in row-major
    (character, pose) order, and their names."""
    if data.attributes is None or data.animation is None or data.frame is None:
        raise ValueError("the dataset lacks attributes, animation or frame arrays")
    P = data.n_poses
    anim = data.animation.astype(np.int64)
    action = actions_of(data)
    direction = np.where(anim == HURT_CELL, 2, anim % 4)
    pose = np.stack([action, direction, data.frame.astype(np.int64)])  # (3, P)
    attrs = data.attributes[rows].astype(np.int64)  # (R, 7)
    ident = np.repeat(attrs.T, P, axis=1)  # (7, R * P)
    return np.concatenate([ident, np.tile(pose, (1, len(rows)))]), factor_names()


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def _linear_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Balanced test accuracy of a standardised logistic regression (rows are images)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_fit)) < 2:  # too few characters to vary it: the constant is all a probe learns
        return _balanced_accuracy(y_test, np.full(len(y_test), y_fit[0]))
    scale = StandardScaler().fit(x_fit)
    clf = LogisticRegression(max_iter=200)
    with warnings.catch_warnings():  # a probe stopped at its cap still scores what it learned
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scale.transform(x_fit), y_fit)
    return _balanced_accuracy(y_test, clf.predict(scale.transform(x_test)))


def partition_table(parts: dict[str, np.ndarray], factors: np.ndarray, names: list[str], R: int, P: int,
                    s: DisentanglementSettings, mutual_info: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Per factor: balanced accuracy of a linear probe from each part (trained on the images of 80 % of
    the characters, scored on the others' images) with chance beside it, and each part's share of the
    summed per-dimension mutual information with the factor (``mutual_info``: each part's (codes, factors)
    matrix where the caller has it already). The probes run in ``s.n_jobs`` processes."""
    rng = np.random.default_rng(s.seed)
    train_chars = rng.permutation(R)[: int(round(s.probe_share * R))]
    train = np.zeros((R, P), dtype=bool)
    train[train_chars] = True
    train = train.ravel()
    fit = rng.permutation(np.flatnonzero(train))[:s.probe_images]
    mi = mutual_info or {}
    mi = {name: mi[name] if name in mi else metrics.mutual_info_matrix(metrics.discretize(codes), factors)
          for name, codes in parts.items()}
    jobs = [(j, name) for j in range(len(names)) for name in parts]
    accs = parallel_map(_linear_probe, [(parts[name][:, fit].T, factors[j][fit], parts[name][:, ~train].T,
                                         factors[j][~train]) for j, name in jobs], s.n_jobs)
    acc = dict(zip(jobs, accs, strict=True))
    rows = []
    for j, fname in enumerate(names):
        y = factors[j]
        row = {"factor": fname, "kind": "identity" if fname in ATTRIBUTE_NAMES else "pose",
               "values": int(len(np.unique(y))), "chance": 1.0 / len(np.unique(y[~train]))}
        for name in parts:
            row[f"{name}_balanced_acc"] = acc[j, name]
            row[f"{name}_mi"] = float(mi[name][:, j].sum())
        total = sum(row[f"{n}_mi"] for n in parts)
        for name in parts:
            row[f"{name}_mi_share"] = row[f"{name}_mi"] / total if total > 0 else float("nan")
        rows.append(row)
    return rows


def disentanglement_metrics(s_codes: np.ndarray, z_sample: np.ndarray, z_mean: np.ndarray, factors: np.ndarray,
                            names: list[str], R: int, P: int, settings: DisentanglementSettings) -> dict:
    """MIG, SAP and DCI of s, z (sampled and mean) and s + z sampled; the partition table of s vs sampled z.

    Codes are (num_codes, R * P). DCI and SAP use ``n_train`` / ``n_test`` images drawn at random
    (as disentanglement_lib samples points); MIG uses all images.
    """
    varying = [j for j in range(len(names)) if len(np.unique(factors[j])) > 1]
    constant = [names[j] for j in range(len(names)) if j not in varying]
    factors, names = factors[varying], [names[j] for j in varying]  # a factor with one value has no entropy
    rng = np.random.default_rng(settings.seed)
    idx = rng.permutation(factors.shape[1])

    def split(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
        """``n_train`` then ``n_test`` of the shuffled images, shrunk in proportion where there are fewer."""
        scale = min(1.0, len(idx) / (n_train + n_test))
        k = int(n_train * scale)
        return idx[:k], idx[k:k + int(n_test * scale)]

    tr, te = split(settings.n_train, settings.n_test)
    dtr, dte = split(settings.dci_train, settings.dci_test)
    reps = {"s": s_codes, "z": z_sample, "z_mean": z_mean}
    out: dict = {"factors": names, "constant_factors": constant, "n_images": int(factors.shape[1]), "n_train": len(tr), "n_test": len(te),
                 "dci_train": len(dtr), "dci_test": len(dte), "mig": {}, "sap": {}}
    # Both MIG and SAP score each code alone, so s + z's matrices are s's and z's stacked: computed once per part.
    mi = {name: metrics.mutual_info_matrix(metrics.discretize(codes), factors) for name, codes in reps.items()}
    sap = {name: metrics.sap_scores(codes[:, tr], factors[:, tr], codes[:, te], factors[:, te], n_jobs=settings.n_jobs)
           for name, codes in reps.items()}
    mi["s+z"], sap["s+z"] = np.vstack([mi["s"], mi["z"]]), np.vstack([sap["s"], sap["z"]])
    for name in [*reps, "s+z"]:
        m = metrics.mig_from_mutual_info(mi[name], factors)
        out["mig"][name] = {"mig": m["mig"], "per_factor": m["per_factor"]}
        out["sap"][name] = {k: v for k, v in metrics.sap_from_scores(sap[name]).items() if k != "score"}
    both = np.concatenate([s_codes, z_sample])
    out["mutual_info_s_z"] = mi["s+z"].tolist()
    d = metrics.dci(both[:, dtr], factors[:, dtr], both[:, dte], factors[:, dte], settings.seed, settings.n_jobs)
    imp = np.array(d.pop("importance"))
    ds = s_codes.shape[0]
    # Where the trees found each factor: the share of its importance on s's codes.
    d["importance_share_s"] = (imp[:ds].sum(0) / np.maximum(imp.sum(0), 1e-12)).tolist()
    out["dci"] = {"s+z": d}
    out["partition"] = partition_table({"s": s_codes, "z": z_sample}, factors, names, R, P, settings,
                                       {"s": mi["s"], "z": mi["z"]})
    return out
