"""Experiments and report at smoke scale; the probes on planted and pure-noise latents."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import images_loaded_in_chromium, synthetic_packed
from PIL import Image

from ccvae import load_dataset, load_run
from ccvae.cli import main
from ccvae.evaluate.probes import ProbeSettings, fit_classifier, fit_predictor, r2_score
from ccvae.evaluate.runner import EvalSettings, evaluate_run
from ccvae.report import build_report

SMALL = EvalSettings(probe=ProbeSettings(max_epochs=4, patience=2), n_swaps=300, figure_scale=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthetic_packed(tmp_path_factory.mktemp("d") / "syn.npz", n_chars=24)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:
    run = tmp_path_factory.mktemp("r") / "run"
    assert main(["train", "--data", str(data), "--preset", "smoke", "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    evaluate_run(run, data, SMALL, log=lambda m: None)
    return run


def test_metrics_complete_and_in_range(run):
    m = json.loads((run / "eval" / "metrics.json").read_text())
    chance = {"identity_all": 1 / 24, "identity_heldout": 1 / 8, "pose": 1 / 178}
    for task, ch in chance.items():
        t = m["classifiers"][task]
        assert math.isclose(t["chance"], ch)
        for latent in ("s", "z"):
            assert 0 <= t[latent]["train_acc"] <= 1 and 0 <= t[latent]["test_acc"] <= 1
            assert t[latent]["epochs"] >= 1
    ih = m["classifiers"]["identity_all"]
    assert ih["n_train"] + ih["n_test"] == 24 * 178 and ih["n_test"] == 24 * (178 - 142)
    assert m["classifiers"]["pose"]["n_train"] == 6 * 178  # 80 % of the 8 test characters
    for name in ("s_to_z", "z_to_s"):
        p = m["predictors"][name]
        assert p["train_loss"] >= 0 and p["val_loss"] >= 0 and 0 < p["regeneration_mse"] < 1
        assert p["n_train"] == 12 * 178 and p["n_val"] == 8 * 178
    sw = m["swap"]
    assert sw["n_swaps"] == 300 and sw["n_reconstructed"] == 8 * 178
    assert 0 < sw["swap_mse"] < 1 and math.isclose(sw["swap_psnr"], 10 * math.log10(1 / sw["swap_mse"]))
    expected = {"style_transfer.png", "interpolation_1.png", "interpolation_2.png", "interpolation_3.png",
                "reconstruction.png", "losses.png", "classifier_curves.png", "predictor_curves.png",
                "predictor_original.png", "predictor_s_to_z.png", "predictor_z_to_s.png", "embedding.png"}
    assert expected <= set(m["figures"])
    for f in expected:
        assert (run / "eval" / f).stat().st_size > 200


def test_style_grid_geometry_and_cells(run, data):
    img = np.asarray(Image.open(run / "eval" / "style_transfer.png"))
    assert img.shape == (9 * 60 + 8, 9 * 60 + 8, 3)  # 9 x 9 tiles of 60 px, 1 px lines
    m = json.loads((run / "eval" / "metrics.json").read_text())
    model, _ = load_run(run)
    ds = load_dataset(data)
    cols, rows = m["style_grid"]["z_columns"], m["style_grid"]["s_rows"]
    x_col = ds.gather(torch.tensor([c[0] for c in cols]), torch.tensor([c[1] for c in cols]))
    x_row = ds.gather(torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]))
    with torch.no_grad():
        z = model.encode(x_col)[0]
        s = model.encode(x_row)[2]
        for i, j in ((0, 0), (2, 5), (7, 7), (5, 1)):
            want = (model.decode(z[j:j + 1], s[i:i + 1])[0].permute(1, 2, 0) * 255).round().numpy()
            y, x = (i + 1) * 61, (j + 1) * 61
            got = img[y:y + 60, x:x + 60].astype(np.float64)
            assert np.abs(got - want).max() <= 1, (i, j)
        # The headers are the source images themselves.
        top = (x_col[3].permute(1, 2, 0) * 255).round().numpy()
        assert np.array_equal(img[0:60, 4 * 61:4 * 61 + 60], top.astype(np.uint8))


def test_evaluate_is_deterministic(run, data, tmp_path):
    first = json.loads((run / "eval" / "metrics.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    second = evaluate_run(copy, data, SMALL, log=lambda m: None)
    for key in ("classifiers", "predictors", "swap", "style_grid"):
        assert json.loads(json.dumps(second[key])) == first[key], key


def test_classifier_probe_planted_and_noise():
    g = torch.Generator().manual_seed(0)
    n, d, k = 3000, 32, 10
    y = torch.randint(k, (n,), generator=g)
    noise = torch.randn(n, d, generator=g)
    planted = noise.clone()
    planted[:, :k] += 8 * torch.nn.functional.one_hot(y, k)
    s = ProbeSettings(max_epochs=15, patience=3)
    good = fit_classifier(planted[:2400], y[:2400], planted[2400:], y[2400:], k, s, seed=0)
    bad = fit_classifier(noise[:2400], y[:2400], noise[2400:], y[2400:], k, s, seed=0)
    assert good.test_acc > 0.99
    assert abs(bad.test_acc - 1 / k) < 0.06


def test_probe_stops_early_only_past_the_share_of_its_schedule():
    """A training metric that never improves after epoch 1 (min_delta of 100 points) stops the probe at
    ``patience`` epochs later, but not before ``stop_after`` of the schedule."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(600, 8, generator=g), torch.randint(3, (600,), generator=g)
    epochs = {share: fit_classifier(x[:500], y[:500], x[500:], y[500:], 3,
                                    ProbeSettings(max_epochs=10, patience=2, min_delta=1.0, stop_after=share),
                                    seed=0).epochs
              for share in (0.0, 0.5, 1.0)}
    assert epochs == {0.0: 3, 0.5: 5, 1.0: 10}


def test_predictor_probe_planted_and_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 16, generator=g)
    w = torch.randn(16, 8, generator=g)
    y_planted = torch.tanh(x @ w / 4)
    y_noise = torch.randn(3000, 8, generator=g)
    s = ProbeSettings(max_epochs=30, patience=4)
    good = fit_predictor(x[:2400], y_planted[:2400], x[2400:], y_planted[2400:], s, seed=0)
    bad = fit_predictor(x[:2400], y_noise[:2400], x[2400:], y_noise[2400:], s, seed=0)
    assert r2_score(good.predict(x[2400:]), y_planted[2400:]) > 0.9
    assert r2_score(bad.predict(x[2400:]), y_noise[2400:]) < 0.05


def _one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ccvae: error:"), err
    for n in needles:
        assert n in err[0], err


def test_evaluate_bad_input(tmp_path, capsys, run, data):
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["evaluate", str(tmp_path / "empty"), "--data", str(data)], "no checkpoints/last.pt")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    shutil.rmtree(broken / "eval")
    ck = broken / "checkpoints" / "last.pt"
    ck.write_bytes(ck.read_bytes()[:2000])
    _one_line_error(capsys, ["evaluate", str(broken), "--data", str(data)], "last.pt")
    assert not (broken / "eval").exists()
    other = synthetic_packed(tmp_path / "other.npz", n_chars=18)
    mismatch = tmp_path / "mismatch"
    shutil.copytree(run, mismatch)
    shutil.rmtree(mismatch / "eval")
    _one_line_error(capsys, ["evaluate", str(mismatch), "--data", str(other)], "does not match")
    assert not (mismatch / "eval").exists() and not list(mismatch.glob(".eval-*"))
    _one_line_error(capsys, ["report", str(tmp_path / "empty")], "ccvae evaluate")


def test_report_images_load_in_chromium(run, tmp_path):
    page = build_report(run)
    n_img, loaded = images_loaded_in_chromium(page.read_text(), tmp_path)
    assert n_img >= 12
    assert loaded == f"{n_img}/{n_img}"


def _planted(identity_in_active: bool, R: int = 20, P: int = 60, seed: int = 0):
    """Encodings whose z holds pose in two active dimensions and identity either in four collapsed ones
    (mean offsets of ~1e-3, sigma 1: what sampling drowns) or in an active one (spread 1, sigma 0.05)."""
    from ccvae.evaluate.encode import Encodings

    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(P, 2, generator=g)
    ident = torch.randn(R, 4, generator=g)
    mu = torch.zeros(R, P, 6)
    logvar = torch.zeros(R, P, 6)
    mu[:, :, :2] = pose[None]
    logvar[:, :, :2] = math.log(0.05 ** 2)
    if identity_in_active:
        mu[:, :, 2:] = ident[:, None, :]
        logvar[:, :, 2:] = math.log(0.05 ** 2)
    else:
        mu[:, :, 2:] = 1e-3 * ident[:, None, :]
    return Encodings(torch.arange(R), mu, torch.randn(R, P, 3, generator=g), logvar)


@pytest.mark.parametrize("active", [False, True])
def test_leakage_probes_see_what_sampling_passes_on(active):
    from ccvae.evaluate.latents import latent_stats
    from ccvae.evaluate.runner import _pose_split, classifier_task

    enc = _planted(active)
    R, P = enc.z.shape[:2]
    mask = _pose_split(R, P, 0.8, torch.Generator().manual_seed(0))
    labels = torch.arange(R)[:, None].expand(R, P)
    res, _ = classifier_task(enc, labels, mask, R, EvalSettings(probe=ProbeSettings(max_epochs=30)), seed=0)
    chance = 1 / R
    assert res["z_mean_std"]["test_acc"] > 0.9  # standardising blows the residue up: "leakage"
    if active:
        assert res["z"]["test_acc"] > 0.9 and res["z_mean"]["test_acc"] > 0.9
    else:
        assert res["z"]["test_acc"] < 2.5 * chance  # sampled z: what the decoder gets holds no identity
    stats = latent_stats(enc.z.flatten(0, 1), enc.z_logvar.flatten(0, 1))
    assert stats["active_units"] == (6 if active else 2)


def test_classifier_probes_in_two_processes_equal_one_after_another():
    """The probes' processes run one thread each; at one thread in this process, the results are the same bits."""
    from ccvae.evaluate.runner import _pose_split, classifier_task

    enc = _planted(True)
    R, P = enc.z.shape[:2]
    mask = _pose_split(R, P, 0.8, torch.Generator().manual_seed(0))
    labels = torch.arange(R)[:, None].expand(R, P)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [classifier_task(enc, labels, mask, R, EvalSettings(probe=ProbeSettings(max_epochs=3), n_jobs=n), seed=0)
                for n in (1, 2)]
    finally:
        torch.set_num_threads(threads)
    (one, one_extra), (two, two_extra) = runs
    assert one == two and one_extra["curves"] == two_extra["curves"]
    assert 0 < one["s"]["train_loss"] and one["z"]["test_acc"] > 0.5  # trained, not a default
    x = enc.s.flatten(0, 1)[:50]
    assert torch.equal(one_extra["fitted"]["s"].predict(x), two_extra["fitted"]["s"].predict(x))


def test_probe_splits_are_seeded_and_hold_out_what_each_task_needs():
    from ccvae.evaluate.runner import probe_splits

    sp = probe_splits(30, 10, 178, 0.8, seed=3)
    assert sp.identity_all.shape == (30, 178) and sp.identity_heldout.shape == sp.pose.shape == (10, 178)
    # Identity: 80 % of every character's poses train, the rest of that character's poses are scored.
    assert (sp.identity_all.sum(1) == 142).all() and (sp.identity_heldout.sum(1) == 142).all()
    # Pose: whole characters train (every pose of 8 of 10), the other 2 characters are scored.
    assert set(sp.pose.sum(1).tolist()) == {0, 178} and int(sp.pose[:, 0].sum()) == 8
    again, other = probe_splits(30, 10, 178, 0.8, seed=3), probe_splits(30, 10, 178, 0.8, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(vars(sp).values(), vars(again).values(), strict=True))
    assert not torch.equal(sp.identity_all, other.identity_all)


def test_active_units_exact():
    from ccvae.evaluate.latents import latent_stats

    g = torch.Generator().manual_seed(1)
    n = 20_000
    scales = torch.tensor([1.0, 0.3, 0.15, 0.05, 0.0])  # variances 1, 0.09, 0.0225, 0.0025, 0
    mu = torch.randn(n, 5, generator=g) * scales
    mu = (mu - mu.mean(0)) / mu.std(0, unbiased=False).clamp_min(1e-12) * scales  # exact variances
    stats = latent_stats(mu, torch.zeros(n, 5))
    assert stats["active_units"] == 3 and stats["active"] == [0, 1, 2]
    kl = 0.5 * scales ** 2  # KL(N(mu, 1) || N(0, 1)) = mu^2 / 2, averaged: var / 2
    assert torch.allclose(torch.tensor(stats["kl_per_dim"], dtype=torch.float64), kl.double(), atol=1e-4)


def test_probe_fits_672_separable_classes():
    """The identity_all probe must be able to fit: 672 well-separated classes reach >= 99 % train and test."""
    g = torch.Generator().manual_seed(2)
    n_classes, per, d = 672, 14, 64
    centres = torch.randn(n_classes, d, generator=g) * 3
    y = torch.arange(n_classes).repeat_interleave(per)
    x = centres[y] + 0.3 * torch.randn(len(y), d, generator=g)
    test = (torch.arange(len(y)) % per) >= per - 3  # 3 of each class held out
    res = fit_classifier(x[~test], y[~test], x[test], y[test], n_classes, ProbeSettings(), seed=0)
    assert res.train_acc >= 0.99 and res.test_acc >= 0.99, (res.train_acc, res.test_acc, res.epochs)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_probe_curves_use_a_subset_and_the_score_every_test_sample(precision):
    """Per-epoch curves score at most ``curve_samples`` images (in the training precision); the reported test
    accuracy is every test image's, in fp32."""
    g = torch.Generator().manual_seed(3)
    k, d = 5, 8
    centres = torch.randn(k, d, generator=g)
    y = torch.randint(0, k, (3000,), generator=g)
    x = centres[y] + 1.2 * torch.randn(len(y), d, generator=g)  # overlapping: accuracy well below 1
    settings = ProbeSettings(max_epochs=4, curve_samples=100, precision=precision)
    res = fit_classifier(x[:2000], y[:2000], x[2000:], y[2000:], k, settings, seed=0)
    full = (res.predict(x[2000:]).argmax(1) == y[2000:]).double().mean().item()
    assert res.test_acc == pytest.approx(full, abs=1e-12)
    assert 0.3 < full < 0.99
    # 100 of 1000 test images per epoch: each curve point is a multiple of 1 / 100.
    assert all(abs(a * 100 - round(a * 100)) < 1e-9 for a in res.curves["test_acc"])


def test_learning_curve_scores_every_kept_checkpoint(tmp_path, data):
    from ccvae.evaluate.curve import kept_checkpoints

    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--preset", "smoke", "--out", str(run), "--quiet", "--device", "cpu",
                 "--max-steps", "280"]) == 0
    assert [p.name for p in kept_checkpoints(run)] == ["epoch_1.pt", "last.pt"]  # 12 * 178 // 8 = 267 steps an epoch
    settings = EvalSettings(probe=ProbeSettings(max_epochs=2, patience=1), n_swaps=100, figure_scale=1,
                            checkpoints=True, curve_probe=ProbeSettings(max_epochs=2, patience=1))
    m = evaluate_run(run, data, settings, log=lambda msg: None)
    rows = m["learning_curve"]
    assert [r["step"] for r in rows] == [267, 280]
    assert all(0 <= r["identity_heldout_s"] <= 1 and r["swap_psnr"] > 0 and r["wall_s"] > 0 for r in rows)
    assert (run / "eval" / "learning_curve.png").is_file()
    # Every stage's seconds are kept, the learning curve's among them, and they account for the evaluation's time.
    st = m["eval_stage_s"]
    assert list(st) == ["encoding", "identity_all", "identity_heldout", "pose", "predictors", "swap",
                        "disentanglement", "figures", "learning_curve"]
    assert all(v >= 0 for v in st.values()) and st["learning_curve"] > 0
    assert 0.9 * m["eval_wall_s"] - 0.5 <= sum(st.values()) <= m["eval_wall_s"] + 0.5


def test_learning_curve_skips_a_checkpoint_next_to_a_later_one(tmp_path, data, monkeypatch):
    """An epoch checkpoint within ``min_gap`` of the run's steps of last.pt adds no point; farther, it is scored."""
    from ccvae.evaluate import curve

    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--preset", "smoke", "--out", str(run), "--quiet", "--device", "cpu",
                 "--max-steps", "269"]) == 0  # epoch_1 at 267, last at 269: 2 steps <= 1 % of 269
    monkeypatch.setattr(curve, "score_checkpoint", lambda model, d, s: {"scored": True})
    (_, cfg), ds = load_run(run), load_dataset(data)
    settings = curve.CurveSettings(ProbeSettings())
    logged: list[str] = []
    rows = curve.learning_curve(run, cfg, ds, torch.device("cpu"), settings, logged.append)
    assert [(r["checkpoint"], r["step"]) for r in rows] == [("last.pt", 269)]
    assert any("epoch_1.pt (step 267) skipped" in m for m in logged)
    rows = curve.learning_curve(run, cfg, ds, torch.device("cpu"), curve.CurveSettings(ProbeSettings(), min_gap=0.005),
                                logged.append)
    assert [r["step"] for r in rows] == [267, 269]


def test_report_opens_with_grid_and_headline_numbers(run):
    text = build_report(run).read_text()
    first_table = text.index("<table")
    head = text[:first_table]
    assert 'alt="style_transfer.png"' in head
    for label in ("ground-truth swap PSNR", "identity of unseen characters from s", "identity from sampled z",
                  "pose from sampled z"):
        assert label in head, label
    for label in ("z (sampled)", "z mean (raw)", "z mean (standardised)", "active z dimensions"):
        assert label in text, label


class _LookupModel(torch.nn.Module):
    """A 'decoder' that draws the true image of (character s[:, 0], pose argmax z[:, :P]) and adds ``leak`` x
    (z's character code - s's): a perfect pose channel, plus identity in z when ``leak`` > 0."""

    def __init__(self, images: torch.Tensor, leak: float) -> None:
        super().__init__()
        self.images, self.leak, self.P = images, leak, images.shape[1]
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # decode_batched reads the device off a parameter

    def decode(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = self.images[s[:, 0].round().long(), z[:, :self.P].argmax(1)]
        return x + self.leak * (z[:, self.P] - s[:, 1])[:, None, None, None]


def test_swap_decomposition_tells_identity_in_z_from_pose():
    from types import SimpleNamespace

    from ccvae.evaluate.encode import Encodings
    from ccvae.evaluate.swap import swap_metrics

    R, P = 6, 5
    g = torch.Generator().manual_seed(0)
    images = torch.rand(R, P, 3, 60, 60, generator=g)
    data = SimpleNamespace(device=torch.device("cpu"), gather=lambda rows, poses: images[rows, poses])
    code = torch.randn(R, generator=g)  # each character's identity code, in z (and in s for the decoder to cancel)
    z = torch.cat([torch.eye(P).expand(R, P, P), code[:, None, None].expand(R, P, 1)], dim=2)  # (R, P, P + 1)
    s = torch.stack([torch.arange(R).float()[:, None].expand(R, P), code[:, None].expand(R, P)], dim=2)  # (R, P, 2)
    enc = Encodings(torch.arange(R), z, s, torch.zeros_like(z))
    clean = swap_metrics(_LookupModel(images, 0.0), data, enc, n_swaps=200, seed=1)
    assert clean["swap_mse"] == clean["same_character_mse"] == clean["mean_pose_code_mse"] == 0
    assert clean["reconstruction_mse"] == 0 and clean["wrong_pose_mse"] > 0.1
    leaky = swap_metrics(_LookupModel(images, 1.0), data, enc, n_swaps=200, seed=1)
    # Own z: the leak cancels. Another character's z carries its code: error. A pose code averaged over the other
    # characters carries their mean code: about half the swap's error (var vs 2 var for a random pair).
    assert leaky["same_character_mse"] == 0 and leaky["reconstruction_mse"] == 0
    assert 0 < leaky["mean_pose_code_mse"] < leaky["swap_mse"]
    assert leaky["swap_psnr"] < leaky["mean_pose_code_psnr"] < leaky["same_character_psnr"] == float("inf")


def test_swap_metrics_reconstruct_a_seeded_subset_and_skip_diagnostics():
    """The learning curve's fast form: ``n_reconstruct`` images drawn with the seed, and no reference swaps."""
    from types import SimpleNamespace

    from ccvae.evaluate.encode import Encodings
    from ccvae.evaluate.swap import swap_metrics

    R, P = 6, 5
    g = torch.Generator().manual_seed(0)
    images = torch.rand(R, P, 3, 60, 60, generator=g)
    data = SimpleNamespace(device=torch.device("cpu"), gather=lambda rows, poses: images[rows, poses])
    code = torch.randn(R, generator=g)
    z = torch.cat([torch.eye(P).expand(R, P, P), code[:, None, None].expand(R, P, 1)], dim=2)  # (R, P, P + 1)
    s = torch.stack([torch.arange(R).float()[:, None].expand(R, P), code[:, None].expand(R, P)], dim=2)  # (R, P, 2)
    enc = Encodings(torch.arange(R), z, s, torch.zeros_like(z))
    full = swap_metrics(_LookupModel(images, 0.5), data, enc, n_swaps=50, seed=1)
    fast = swap_metrics(_LookupModel(images, 0.5), data, enc, n_swaps=50, seed=1, n_reconstruct=7, diagnostics=False)
    assert full["n_reconstructed"] == R * P and fast["n_reconstructed"] == 7
    assert fast["swap_mse"] == full["swap_mse"] and "same_character_mse" not in fast
    again = swap_metrics(_LookupModel(images, 0.5), data, enc, n_swaps=50, seed=1, n_reconstruct=7, diagnostics=False)
    assert again == fast


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_prepare_for_eval_layout_and_same_images(norm):
    """Evaluation runs the model channels_last on a CPU (fp32), except with instance norm; decoded images come back
    NCHW-contiguous and equal to the contiguous model's, encodings within float tolerance."""
    from ccvae.config import build_config
    from ccvae.evaluate.encode import decode_batched, prepare_for_eval
    from ccvae.model import CCVAE

    cfg = build_config("smoke", overrides=[f"model.norm={norm}", f"model.dec_norm={norm}"])
    torch.manual_seed(0)
    ref = CCVAE(cfg.model).eval()
    model = prepare_for_eval(CCVAE(cfg.model), "cpu")
    model.load_state_dict(ref.state_dict())
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == (norm == "batch")
    assert not model.training
    z, s = torch.randn(9, cfg.model.style_dim), torch.randn(9, cfg.model.class_dim)
    x_hat = decode_batched(model, z, s, batch_size=4)
    assert x_hat.is_contiguous() and x_hat.shape == (9, 3, 60, 60)
    with torch.no_grad():
        torch.testing.assert_close(x_hat, ref.decode(z, s), atol=1e-5, rtol=1e-4)
        x = torch.rand(5, 3, 60, 60)
        for got, want in zip(model.encode(x), ref.encode(x), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_attributes_from_z_benchmark(run, data):
    """benchmarks/attributes_from_z.py: one row per attribute, scored on held-out characters only."""
    import numpy as np
    import torch
    from conftest import load_benchmark

    rows = load_benchmark("attributes_from_z").attribute_scores(str(run), load_dataset(data), seed=0)
    attrs = torch.from_numpy(np.load(data)["attributes"].astype("int64"))  # read here, not through the dataset
    assert [r["attribute"] for r in rows] == list(range(7))
    test_ids = np.load(data)["test_ids"].astype("int64")  # 8 test characters: 6 fit the probe, 2 score it
    perm = torch.randperm(len(test_ids), generator=torch.Generator().manual_seed(0))
    held_out = torch.as_tensor(test_ids)[perm[6:]]
    for r in rows:
        assert r["n_test_characters"] == 2
        y = attrs[held_out, r["attribute"]]
        assert math.isclose(r["majority"], torch.bincount(y).max().item() / len(y))
        assert 0 <= r["s"] <= 1 and 0 <= r["z_sampled"] <= 1


def test_evaluate_scores_the_moving_average_and_records_which(tmp_path, capsys, run, data):
    from dataclasses import replace

    # The module's run kept no average: "auto" scored its live weights, and asking for the average is a clean error.
    assert json.loads((run / "eval" / "metrics.json").read_text())["settings"]["weights"] == "live"
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "eval")
    _one_line_error(capsys, ["evaluate", str(copy), "--data", str(data), "--weights", "ema"], "train.ema_decay=0")
    assert not (copy / "eval").exists()
    # A run that kept one is scored on it by default, and on its live weights on request: different models.
    ema = tmp_path / "ema"
    assert main(["train", "--data", str(data), "--preset", "smoke", "--out", str(ema), "--quiet", "--device", "cpu",
                 "--set", "train.ema_decay=0.95", "--max-steps", "60"]) == 0
    live = tmp_path / "live"
    shutil.copytree(ema, live)
    # With the learning curve, whose checkpoints are scored on the same weights.
    settings = replace(SMALL, checkpoints=True, curve_probe=ProbeSettings(max_epochs=1, patience=1))
    m_ema = evaluate_run(ema, data, settings, log=lambda msg: None)
    m_live = evaluate_run(live, data, replace(settings, weights="live"), log=lambda msg: None)
    assert m_ema["settings"]["weights"] == "ema" and m_live["settings"]["weights"] == "live"
    assert m_ema["swap"]["reconstruction_psnr"] != m_live["swap"]["reconstruction_psnr"]
    (curve_ema,), (curve_live,) = m_ema["learning_curve"], m_live["learning_curve"]
    assert curve_ema["step"] == curve_live["step"] == 60
    assert curve_ema["reconstruction_psnr"] != curve_live["reconstruction_psnr"]
    assert "<td>the moving average (train.ema_decay)</td>" in build_report(ema).read_text()
    assert "<td>weights scored</td><td>the live weights</td>" in build_report(live).read_text()
