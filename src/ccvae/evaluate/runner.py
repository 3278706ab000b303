"""``ccvae evaluate RUN_DIR``: every experiment, written to ``RUN_DIR/eval/`` (metrics.json + figures).

Encodings come from the model in eval mode. z is probed three ways; the headline is
a posterior sample, what the decoder is fed (``LATENT_PROBES``). Figures, swaps and predictors use z = z_mu. Every
random choice is seeded, so evaluating a run twice gives the same numbers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ccvae import figures
from ccvae.checkpoint import load_run_weights, read_run_config
from ccvae.data.dataset import SpritesDataset
from ccvae.errors import UserError
from ccvae.evaluate.curve import CurveSettings, learning_curve
from ccvae.evaluate.disentanglement import (
    DisentanglementSettings,
    disentanglement_metrics,
    factors_of,
)
from ccvae.evaluate.encode import Encodings, decode_batched, encode_rows, prepare_for_eval
from ccvae.evaluate.latents import latent_stats
from ccvae.evaluate.probes import ProbeSettings, fit_classifier, fit_predictor, r2_score
from ccvae.evaluate.swap import per_image_mse, swap_metrics
from ccvae.fileio import ensure_writable, last_metric, plain_mode, write_json
from ccvae.hardware import resolve_precision
from ccvae.workers import parallel_map, resolve_jobs, worker_pool


@dataclass
class EvalSettings:
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    n_swaps: int = 5000
    seed: int = 0
    batch_size: int = 512
    train_share: float = 0.8  # 80/20 split of poses (identity) or of characters (pose)
    n_interpolations: int = 3
    interpolation_steps: int = 8
    figure_scale: int = 2
    checkpoints: bool = False  # also score every kept checkpoint (learning curve)
    disentanglement: DisentanglementSettings = field(default_factory=DisentanglementSettings)
    curve_probe: ProbeSettings = field(default_factory=lambda: ProbeSettings(max_epochs=10, patience=3))
    # Processes for the classifier and predictor probes on the CPU (1: here, at this process's threads; 0: this
    # process's share of the cores, ``workers.resolve_jobs``: 2 on a 2-core machine, 1 for each of two seeds there).
    n_jobs: int = 0
    # Which weights to score (checkpoint.WEIGHTS): by default the moving average where the run kept one
    # (train.ema_decay > 0), else the live weights; metrics.json records which.
    weights: str = "auto"


def _pose_split(n_chars: int, n_poses: int, share: float, g: torch.Generator) -> torch.Tensor:
    """Boolean (n_chars, n_poses) training mask: a random ``share`` of each character's poses."""
    n_train = int(round(share * n_poses))
    ranks = torch.rand(n_chars, n_poses, generator=g).argsort(1)
    train = torch.zeros(n_chars, n_poses, dtype=torch.bool)
    train.scatter_(1, ranks[:, :n_train], True)
    return train


@dataclass(frozen=True)
class ProbeSplits:
    """Training masks of the three classifier tasks (True: the probe trains on that image)."""

    identity_all: torch.Tensor  # (R, P): a share of every character's poses
    identity_heldout: torch.Tensor  # (Rt, P): the same among the test characters
    pose: torch.Tensor  # (Rt, P): all poses of a share of the test characters; the rest are scored


def probe_splits(n_all: int, n_test: int, n_poses: int, share: float, seed: int) -> ProbeSplits:
    """The evaluation's splits, drawn in one seeded sequence (so a benchmark can probe other inputs on them)."""
    g = torch.Generator().manual_seed(seed)
    identity_all = _pose_split(n_all, n_poses, share, g)
    identity_heldout = _pose_split(n_test, n_poses, share, g)
    n_train_chars = min(n_test - 1, max(1, int(round(share * n_test))))
    pose = torch.zeros(n_test, n_poses, dtype=torch.bool)
    pose[torch.randperm(n_test, generator=g)[:n_train_chars]] = True
    return ProbeSplits(identity_all, identity_heldout, pose)


# What each probe reads, and whether its inputs are standardised per dimension.
#   z:          one posterior sample per image, mu + sigma * eps: what the decoder is fed (the headline).
#   z_mean:     the raw posterior mean: what the reference re-implementation probed (its
#               reparameterize(training=False) returns mu); the paper's probe code is unpublished.
#   z_mean_std: the mean standardised per dimension (this package's measure before 0.2): collapsed
#               dimensions' residue is blown up to unit variance, so it reads what the channel drops.
LATENT_PROBES = {"s": ("s", True), "z": ("z_sample", True), "z_mean": ("z", False), "z_mean_std": ("z", True)}


def _probe_jobs(settings: EvalSettings) -> int:
    """Processes for the probes: ``settings.n_jobs`` on the CPU (0: ``resolve_jobs``); on a GPU one, here (the device
    is not shared)."""
    return settings.n_jobs if torch.device(settings.probe.device).type == "cpu" else 1


def classifier_task(enc: Encodings, labels: torch.Tensor, train_mask: torch.Tensor, n_classes: int,
                    settings: EvalSettings, seed: int) -> tuple[dict, dict]:
    """Fit one classifier per entry of ``LATENT_PROBES``; ``labels`` and ``train_mask`` are (R, P).

    On the CPU the probes run in ``settings.n_jobs`` processes of one thread each: these small MLPs use a
    second thread poorly, so two side by side finish sooner than one after another at two threads (the quick
    network's 672-identity probes: 108 s, the pool's start-up included, against 119 s on a 2-core Zen 4).
    """
    out, curves, fitted = {"n_classes": n_classes, "chance": 1.0 / n_classes,
                           "n_train": int(train_mask.sum()), "n_test": int((~train_mask).sum())}, {}, {}
    inputs = {"s": enc.s, "z": enc.z, "z_sample": enc.z_sample(seed + 1000)}
    sigma = torch.exp(0.5 * enc.z_logvar)
    jobs = []
    for source, standardize in LATENT_PROBES.values():
        x = inputs[source]
        # Sampled z: training sees a fresh sample every step (mean + sigma * eps), testing one fixed sample.
        fresh = sigma[train_mask] if source == "z_sample" else None
        x_fit = enc.z[train_mask] if source == "z_sample" else x[train_mask]
        jobs.append((x_fit, labels[train_mask], x[~train_mask], labels[~train_mask], n_classes, settings.probe, seed,
                     standardize, fresh))
    for latent, res in zip(LATENT_PROBES, parallel_map(fit_classifier, jobs, _probe_jobs(settings)), strict=True):
        out[latent] = {"train_acc": res.train_acc, "test_acc": res.test_acc, "train_loss": res.train_loss,
                       "test_loss": res.test_loss, "epochs": res.epochs}
        curves[latent] = res.curves
        fitted[latent] = res
    return out, {"curves": curves, "fitted": fitted}


class _Stages:
    """Logs each stage's start with the seconds elapsed, and keeps the seconds each stage took (metrics.json's
    ``eval_stage_s``: where a machine spends the evaluation, without rerunning it unquiet)."""

    def __init__(self, log) -> None:
        self._log, self.t0 = log, time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._open: str | None = None
        self._since = self.t0

    def log(self, msg: str) -> None:
        self._log(f"[{time.perf_counter() - self.t0:6.1f} s] {msg}")

    def start(self, name: str, msg: str | None = None) -> None:
        self.stop()
        self._open, self._since = name, time.perf_counter()
        self.log(msg or name)

    def stop(self) -> None:
        if self._open is not None:
            self.seconds[self._open] = round(time.perf_counter() - self._since, 1)
            self._open = None


def evaluate_run(run_dir: str | Path, data_path: str | Path, settings: EvalSettings | None = None,
                 device: str | torch.device = "cpu", log=print) -> dict:
    """Run every experiment on a trained run; write ``eval/`` atomically (a temp folder, then a rename).

    The CPU-bound fits share one pool of worker processes, started at the first and killed if anything
    (Ctrl-C, SIGTERM, an error) stops the evaluation."""
    settings = settings or EvalSettings()
    # The pool resolves 0 itself; resolved here too so that metrics.json records how many processes ran.
    settings = replace(settings, n_jobs=resolve_jobs(settings.n_jobs), disentanglement=replace(
        settings.disentanglement, n_jobs=resolve_jobs(settings.disentanglement.n_jobs)))
    with worker_pool(max(settings.n_jobs, settings.disentanglement.n_jobs)):
        return _evaluate_run(Path(run_dir), data_path, settings, device, log)


def _evaluate_run(run_dir: Path, data_path: str | Path, settings: EvalSettings, device: str | torch.device,
                  log) -> dict:
    stages = _Stages(log)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise UserError(f"{run_dir}: no checkpoints/last.pt; train the run first (ccvae train --out {run_dir})")
    ensure_writable(run_dir, "run folder")  # before the minutes of probes, not after
    model, cfg, weights = load_run_weights(run_dir, weights=settings.weights)
    settings = replace(settings, weights=weights)  # "auto" resolved: metrics.json says which weights it scored
    data = SpritesDataset.load(data_path)
    meta = _read_meta(run_dir)
    fp = data.fingerprint()
    if "data_fingerprint" in meta and meta["data_fingerprint"] != fp:
        raise UserError(f"{data_path}: does not match the data {run_dir} was trained on "
                        f"(characters, poses or splits differ)")
    if fp["image_size"] != cfg.model.image_size:
        raise UserError(f"{data_path}: images are {fp['image_size']} px but the run's model expects {cfg.model.image_size}")
    device = torch.device(device)
    # Record what the probes ran in (``auto`` resolved), so metrics.json says which precision gave its numbers.
    on_device = lambda p: replace(p, device=str(device), precision=resolve_precision(p.precision, device))  # noqa: E731
    settings = replace(settings, probe=on_device(settings.probe), curve_probe=on_device(settings.curve_probe))
    model = prepare_for_eval(model, device)
    torch.manual_seed(settings.seed)

    stages.start("encoding", f"encoding {data.n_images('all'):,} images")
    all_rows = data.rows("all").cpu()
    enc_all = encode_rows(model, data, all_rows, settings.batch_size)
    test_pos = data.rows("test").cpu()
    enc_test = enc_all.select(test_pos)
    train_pos = data.rows("train").cpu()
    enc_train = enc_all.select(train_pos)
    R, P = enc_all.z.shape[:2]
    Rt = len(test_pos)
    splits = probe_splits(R, Rt, P, settings.train_share, settings.seed)
    metrics: dict = {"latents": latent_stats(enc_test.z.flatten(0, 1), enc_test.z_logvar.flatten(0, 1)),
                     "classifiers": {}, "predictors": {}}
    curves: dict = {}

    # 1. Latent classifiers.
    stages.start("identity_all", "classifiers: identity_all")
    labels = torch.arange(R)[:, None].expand(R, P)
    metrics["classifiers"]["identity_all"], extra = classifier_task(enc_all, labels, splits.identity_all, R, settings,
                                                                    settings.seed)
    curves["identity_all"] = extra["curves"]
    s_classifier = extra["fitted"]["s"]

    stages.start("identity_heldout", "classifiers: identity_heldout")
    labels = torch.arange(Rt)[:, None].expand(Rt, P)
    metrics["classifiers"]["identity_heldout"], extra = classifier_task(enc_test, labels, splits.identity_heldout, Rt,
                                                                        settings, settings.seed + 1)
    curves["identity_heldout"] = extra["curves"]

    stages.start("pose", "classifiers: pose")
    labels = torch.arange(P)[None, :].expand(Rt, P)
    metrics["classifiers"]["pose"], extra = classifier_task(enc_test, labels, splits.pose, P, settings, settings.seed + 2)
    curves["pose"] = extra["curves"]
    metrics["classifiers"]["pose"]["train_characters"] = int(splits.pose[:, 0].sum())

    # 2. Predictors s -> z and z -> s: train on training characters, validate on test characters.
    stages.start("predictors")
    tmp = Path(tempfile.mkdtemp(prefix=".eval-", dir=run_dir))
    try:
        pred_curves = {}
        g_fig = torch.Generator().manual_seed(settings.seed + 3)
        show = torch.randperm(Rt * P, generator=g_fig)[:32]
        x_show = data.gather(enc_test.rows.repeat_interleave(P)[show].to(data.device),
                             torch.arange(P).repeat(Rt)[show].to(data.device)).cpu()
        zt, st = enc_test.z.flatten(0, 1), enc_test.s.flatten(0, 1)
        test_identity = enc_test.rows.repeat_interleave(P)  # identity_all labels are dataset rows
        images_pose = torch.arange(P).repeat(Rt)
        directions = (("s_to_z", "s", "z"), ("z_to_s", "z", "s"))
        sets = {name: (getattr(enc_train, src).flatten(0, 1), getattr(enc_train, dst).flatten(0, 1),
                       getattr(enc_test, src).flatten(0, 1), getattr(enc_test, dst).flatten(0, 1))
                for name, src, dst in directions}
        fits = parallel_map(fit_predictor, [(*sets[name], settings.probe, settings.seed + 4) for name, _, _ in directions],
                            _probe_jobs(settings))
        for (name, _, _), res in zip(directions, fits, strict=True):
            xs_tr, _, xs_te, ys_te = sets[name]
            pred = res.predict(xs_te)
            z_use, s_use = (pred, st) if name == "s_to_z" else (zt, pred)
            regen = _image_mse(model, data, z_use, s_use, test_identity, images_pose, settings.batch_size)
            metrics["predictors"][name] = {
                "train_loss": res.train_loss, "val_loss": res.test_loss, "val_r2": r2_score(pred, ys_te),
                "regeneration_mse": regen, "epochs": res.epochs, "n_train": len(xs_tr), "n_val": len(xs_te)}
            pred_curves[name] = res.curves
            # Figure: the generated batch, misclassified identities underlined.
            gen = decode_batched(model, z_use[show], s_use[show])
            s_gen = encode_rows_images(model, gen)
            wrong = s_classifier.predict(s_gen).argmax(1) != test_identity[show]
            metrics["predictors"][name]["figure_misclassified"] = int(wrong.sum())
            figures.save_png(figures.tile_grid(figures.underline(gen, wrong).view(4, 8, 3, 60, 60),
                                               settings.figure_scale), tmp / f"predictor_{name}.png")
        figures.save_png(figures.tile_grid(x_show.view(4, 8, 3, 60, 60), settings.figure_scale),
                         tmp / "predictor_original.png")

        # 3. Ground-truth swaps among test characters.
        stages.start("swap", "swap metrics")
        metrics["swap"] = swap_metrics(model, data, enc_test, settings.n_swaps, settings.seed + 5, settings.batch_size)
        # The predictors' reference: plain reconstruction of the same test images, which the swap metrics decode
        # (17,800 images; decoding them a second time took about 10 s of the quick run's evaluation on a 2-core Zen 4).
        metrics["predictors"]["reconstruction_mse"] = metrics["swap"]["reconstruction_mse"]

        # 4. Standard disentanglement metrics and the partition table on the ground-truth factors.
        stages.start("disentanglement", "disentanglement metrics")
        fac, names = factors_of(data, enc_test.rows.numpy())
        flat = lambda t: t.flatten(0, 1).numpy().T  # noqa: E731  (R, P, d) -> (d, R * P)
        dis = disentanglement_metrics(flat(enc_test.s), flat(enc_test.z_sample(settings.seed + 1000)),
                                      flat(enc_test.z), fac, names, Rt, P, settings.disentanglement)
        metrics["disentanglement"] = dis
        _disentanglement_figures(dis, settings.disentanglement, enc_test, model, metrics["latents"], tmp)

        # 5. Figures.
        stages.start("figures")
        figs = _image_figures(model, data, enc_test, settings, tmp)
        figures.plot_classifier_curves(curves, tmp / "classifier_curves.png")
        figures.plot_predictor_curves(pred_curves, tmp / "predictor_curves.png")
        ident = np.repeat(np.arange(Rt), P)
        pose = np.tile(np.arange(P), Rt)
        figures.plot_embeddings(enc_test.s.flatten(0, 1).numpy(), enc_test.z.flatten(0, 1).numpy(), ident, pose,
                                tmp / "embedding.png")
        if (run_dir / "metrics.csv").is_file():
            figures.plot_losses(run_dir / "metrics.csv", tmp / "losses.png")
        if settings.checkpoints:
            curve_settings = CurveSettings(settings.curve_probe, seed=settings.seed, batch_size=settings.batch_size,
                                           train_share=settings.train_share, weights=settings.weights)
            stages.start("learning_curve", "learning curve")
            rows = learning_curve(run_dir, cfg, data, device, curve_settings, stages.log)
            metrics["learning_curve"] = rows
            figures.plot_learning_curve(rows, tmp / "learning_curve.png")
        metrics["figures"] = sorted(p.name for p in tmp.glob("*.png"))
        metrics["style_grid"] = figs
        metrics["settings"] = asdict(settings)
        metrics["data"] = {"path": str(data_path), **fp}
        metrics["run"] = {"steps": meta.get("total_steps"), "train_wall_s": last_metric(run_dir / "metrics.csv", "wall_s"),
                          "parameters": meta.get("parameters"), "precision": meta.get("precision")}
        stages.stop()
        metrics["eval_wall_s"] = round(time.perf_counter() - stages.t0, 1)
        metrics["eval_stage_s"] = stages.seconds
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "curves.json", {"classifiers": curves, "predictors": pred_curves})
        final = run_dir / "eval"
        old = run_dir / ".eval-old"
        shutil.rmtree(old, ignore_errors=True)  # left by a kill between the two renames below
        if final.exists():
            final.rename(old)
        plain_mode(tmp, directory=True)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metrics


def encode_rows_images(model, x: torch.Tensor) -> torch.Tensor:
    """s of already-decoded images (N, 3, 60, 60)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.encode(x.to(device))[2].float().cpu()


def _image_mse(model, data, z, s, rows, poses, batch_size) -> float:
    """Mean over images of the per-image MSE of decode(z, s) against the dataset images (rows, poses)."""
    return per_image_mse(model, data, z, s, rows, poses, batch_size).mean().item()


def _image_figures(model, data, enc: Encodings, settings: EvalSettings, out: Path) -> dict:
    """Style-transfer grid, interpolation grids and a reconstruction grid, from test sprites."""
    g = torch.Generator().manual_seed(settings.seed + 6)
    R, P = enc.z.shape[:2]
    pick = lambda n: (torch.randint(R, (n,), generator=g), torch.randint(P, (n,), generator=g))  # noqa: E731
    img = lambda r, p: data.gather(enc.rows[r].to(data.device), p.to(data.device)).cpu()  # noqa: E731

    # Style grid: 8 across the top give z, 8 down the left give s; cell (i, j) = dec(z_j, s_i).
    cr, cp = pick(8)
    rr, rp = pick(8)
    z_cols, s_rows = enc.z[cr, cp], enc.s[rr, rp]
    cells = decode_batched(model, z_cols.repeat(8, 1), s_rows.repeat_interleave(8, 0)).view(8, 8, 3, 60, 60)
    grid = torch.zeros(9, 9, 3, 60, 60)
    grid[0, 1:] = img(cr, cp)
    grid[1:, 0] = img(rr, rp)
    grid[1:, 1:] = cells
    figures.save_png(figures.tile_grid(grid, settings.figure_scale), out / "style_transfer.png")

    # Interpolation grids: z interpolated across columns, s down rows.
    n = settings.interpolation_steps
    w = torch.linspace(0, 1, n)
    for k in range(settings.n_interpolations):
        (r1, r2), (p1, p2) = pick(2)
        z = (1 - w)[:, None] * enc.z[r1, p1] + w[:, None] * enc.z[r2, p2]  # (n, dz) across columns
        s = (1 - w)[:, None] * enc.s[r1, p1] + w[:, None] * enc.s[r2, p2]  # (n, ds) down rows
        tiles = decode_batched(model, z.repeat(n, 1), s.repeat_interleave(n, 0)).view(n, n, 3, 60, 60)
        figures.save_png(figures.tile_grid(tiles, settings.figure_scale), out / f"interpolation_{k + 1}.png")

    # Reconstructions: originals (odd rows) over decode(z_mu, s) (even rows).
    r, p = pick(32)
    x = img(r, p)
    x_hat = decode_batched(model, enc.z[r, p], enc.s[r, p])
    rows = torch.stack([x.view(4, 8, 3, 60, 60), x_hat.view(4, 8, 3, 60, 60)], 1).view(8, 8, 3, 60, 60)
    figures.save_png(figures.tile_grid(rows, settings.figure_scale), out / "reconstruction.png")
    return {"z_columns": [[int(enc.rows[a]), int(b)] for a, b in zip(cr, cp, strict=True)],
            "s_rows": [[int(enc.rows[a]), int(b)] for a, b in zip(rr, rp, strict=True)]}


def _disentanglement_figures(dis: dict, settings: DisentanglementSettings, enc: Encodings, model, latents: dict,
                             out: Path) -> None:
    """The partition table as a heat map, mutual information per dimension, and traversals of active z dims."""
    names = dis["factors"]
    part = dis["partition"]
    cols = ["s balanced acc", "z balanced acc", "chance", "s share of MI", "z share of MI"]
    grid = [[r["s_balanced_acc"], r["z_balanced_acc"], r["chance"], r["s_mi_share"], r["z_mi_share"]] for r in part]
    figures.plot_heatmap(np.array(grid), names, cols, "Which part holds each factor (test characters; z sampled)",
                         out / "partition.png", vmax=1.0)
    mi = np.array(dis["mutual_info_s_z"]).T  # (factors, s dims + z dims)
    ds = enc.s.shape[-1]
    labels = [f"s{i}" for i in range(ds)] + [f"z{i}" for i in range(mi.shape[1] - ds)]
    figures.plot_heatmap(mi, names, labels, "Mutual information (nats) of each dimension (s, then sampled z) "
                         "with each factor", out / "mutual_info.png", fmt="{:.1f}")
    active = latents["active"]
    if not active:
        return
    # Traversals: one row per active z dimension, swept over its mean +- 3 standard deviations across
    # images, from one test image's (z mean, s).
    mu = enc.z.flatten(0, 1)
    center, spread = mu.mean(0), mu.std(0)
    z0, s0 = enc.z[0, 0], enc.s[0, 0]
    t = torch.linspace(-3, 3, 9)
    zs = z0.repeat(len(active) * len(t), 1)
    for r, d in enumerate(active):
        zs[r * len(t):(r + 1) * len(t), d] = center[d] + t * spread[d]
    tiles = decode_batched(model, zs, s0.repeat(len(zs), 1)).view(len(active), len(t), 3, 60, 60)
    figures.save_png(figures.tile_grid(tiles, 2), out / "traversals.png")


def _read_meta(run_dir: Path) -> dict:
    import json
    read_run_config(run_dir)  # validates config.json
    return json.loads((run_dir / "config.json").read_text())
