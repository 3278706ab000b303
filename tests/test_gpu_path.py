"""What prepares the GPU path and runs on the CPU too: ``--seeds``, ``train.compile`` and the GPU check's dry run."""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest
import torch
from conftest import ROOT as ROOT_DIR
from test_train import ENV

from ccvae.checkpoint import load_checkpoint
from ccvae.cli import main
from ccvae.seeds import HEADLINE, aggregate, parse_seeds


def test_seeds_train_one_run_per_seed(tmp_path, capsys, tiny_npz):
    out = tmp_path / "multi"
    code = main(["train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(out), "--seeds", "0,1",
                 "--device", "cpu", "--max-steps", "10"])
    err = capsys.readouterr().err
    assert code == 0, err + "".join(p.read_text() for p in out.glob("*.log"))
    a = load_checkpoint(out / "seed0" / "checkpoints" / "last.pt")
    b = load_checkpoint(out / "seed1" / "checkpoints" / "last.pt")
    assert a["config"]["train"]["seed"] == 0 and b["config"]["train"]["seed"] == 1
    assert a["step"] == b["step"] == 10
    assert any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("argv,needle", [
    (["--seeds", "0,x"], "--seeds"), (["--seeds", "1,1"], "distinct"), (["--seeds", "0,1", "--seed", "3"], "exclude"),
])
def test_seeds_bad_input(tmp_path, capsys, tiny_npz, argv, needle):
    code = main(["train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_seeds_aggregate_mean_and_spread(tmp_path):
    runs = []
    for i, v in enumerate((0.5, 0.7)):
        m: dict = {}
        for _, keys in HEADLINE:
            d = m
            for k in keys[:-1]:
                d = d.setdefault(k, {})
            d[keys[-1]] = v + i
        (tmp_path / f"seed{i}" / "eval").mkdir(parents=True)
        (tmp_path / f"seed{i}" / "eval" / "metrics.json").write_text(json.dumps(m))
        runs.append(tmp_path / f"seed{i}")
    s = aggregate(runs)
    assert s["n"] == 2 and s["mean"]["swap_psnr"] == pytest.approx(1.1)
    assert s["std"]["swap_psnr"] == pytest.approx(statistics.stdev([0.5, 1.7]))
    assert parse_seeds("2,0") == [2, 0]


def test_compiled_step_trains_like_the_eager_one(tmp_path, capsys, tiny_npz):
    """train.compile=default computes the eager step's losses: the first step's terms (same weights, same draws)
    agree to rounding. (Later steps drift apart: Adam's first updates are close to sign(grad), which turns rounding
    into lr-sized moves; measured 0.6-4.5 % on the KL after 10 steps.)"""
    rows = {}
    for mode in ("off", "default"):
        out = tmp_path / mode
        code = main(["train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(out), "--quiet",
                     "--device", "cpu", "--max-steps", "3", "--set", "train.log_every=1", "--set", f"train.compile={mode}",
                     "--set", "train.precision=fp32"])
        assert code == 0, capsys.readouterr().err
        rows[mode] = [r.split(",") for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert len(rows["off"]) == len(rows["default"]) == 3
    for i in (4, 5):  # reconstruction and KL of step 1
        assert float(rows["default"][0][i]) == pytest.approx(float(rows["off"][0][i]), rel=1e-4), (rows, i)


@pytest.mark.slow
def test_gpu_check_dry_run_writes_the_summary(tmp_path):
    out = tmp_path / "x"
    res = subprocess.run(["bash", str(ROOT_DIR / "benchmarks" / "gpu_check.sh"), "--dry-run", str(out)],
                         capture_output=True, text=True, timeout=900, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((out / "gpu_check.json").read_text())
    assert s["phases_done"] == ["env", "tests", "speed", "seeds", "paper", "targets"], s.get("errors")
    assert s["dry_run"] and s["device"] == "cpu" and not s.get("errors")
    assert s["env"]["torch"] == torch.__version__
    assert s["tests"]["tests"] >= 1 and s["tests"]["skipped"] == s["tests"]["tests"]  # CUDA tests skip on a CPU
    options = {r["option"]: r for r in s["speed"]}
    assert set(options) == {"train.compile=off", "train.compile=default", "train.compile=reduce-overhead",
                            "train.capture=cuda-graph"}
    assert options.pop("train.capture=cuda-graph")["skipped"] == "needs CUDA"
    for r in options.values():
        assert r["exit_code"] == 0 and r["ms_per_step"] > 0 and 0 <= r["data_share"] < 1, r
    assert s["option"] in options and s["paper"]["option"] == s["option"]
    assert s["seeds"]["ratio"] is not None and len(s["seeds"]["images_per_s_three"]) == 3
    p = s["paper"]
    assert p["steps"] == 40 and p["s_per_epoch"] > 0 and p["eval_exit_code"] == 0 and p["report"]
    assert set(s["targets"]) >= {"s_per_epoch", "s_per_epoch_met", "data_share_max", "seeds_ratio", "seeds_met"}
