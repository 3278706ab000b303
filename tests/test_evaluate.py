"""Experiments and report at smoke scale; the probes on planted and pure-noise latents."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_packed
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
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    page = build_report(run)
    text = page.read_text()
    n_img = text.count("<img ")
    assert n_img >= 12
    # A copy of the page with a probe that lists, once everything has loaded, how many images decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});</script></body>"""))
    res = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert f'data-images="{n_img}/{n_img}"' in res.stdout, res.stderr[-2000:]
