"""``ccvae train``: the run folder, resume equivalence, interruption, divergence, bad input, DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ccvae import load_dataset, load_run
from ccvae.checkpoint import load_checkpoint
from ccvae.cli import main
from ccvae.config import build_config
from ccvae.train import METRIC_FIELDS, Trainer, TrainingDiverged

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(capsys, *argv):
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ccvae: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def train_cli(capsys, data, out, *extra):
    return cli(capsys, "train", "--data", str(data), "--preset", "smoke", "--out", str(out), "--quiet",
               "--device", "cpu", *extra)


def test_smoke_run_folder(tmp_path, capsys, tiny_npz):
    t0 = time.perf_counter()
    code, out, err = train_cli(capsys, tiny_npz, tmp_path / "run")
    assert code == 0, err
    assert time.perf_counter() - t0 < 60
    run = tmp_path / "run"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["ccvae_version"] and cfg["train"]["max_steps"] == 20 and cfg["model"]["style_dim"] == 8
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRIC_FIELDS and len(rows) == 4
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert all(float(r["reconstruction"]) > 0 for r in rows)
    assert (run / "losses.png").stat().st_size > 1000
    assert "done: 20 steps" in (run / "log.txt").read_text()
    assert (run / "checkpoints" / "last.pt").is_file()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 20 and {"opt_fwd", "opt_rev", "sched", "rng"} <= set(state)
    model, cfg2 = load_run(run)
    mu, logvar, s = model.encode(torch.rand(2, 3, 60, 60))
    assert model.decode(mu, s).shape == (2, 3, 60, 60) and cfg2.model.style_dim == 8


def test_epoch_checkpoints(tmp_path, capsys, tiny_npz):
    # tiny: 6 train characters x 178 poses / batch 8 = 133 steps per epoch
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "run", "--max-steps", "140", "--set",
                             "train.checkpoint_every=1000")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_1.pt", "last.pt"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_1.pt")["step"] == 133


def test_resume_equivalence(tmp_path, capsys, tiny_npz):
    """Stopped after a checkpoint and resumed == uninterrupted, bit for bit, on CPU."""
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "a", "--max-steps", "20")
    assert code == 0, err
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "b", "--max-steps", "10")
    assert code == 0, err
    # Simulate a run killed after logging past its checkpoint: those rows are redone, not duplicated.
    with open(tmp_path / "b" / "metrics.csv", "a") as f:
        f.write("1,15,120,9.9,0.5,0.1,0.1,0.001,10\n")
    code, _, err = cli(capsys, "train", "--data", str(tiny_npz), "--out", str(tmp_path / "b"), "--resume",
                       "--max-steps", "20", "--quiet", "--device", "cpu")
    assert code == 0, err
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with open(tmp_path / "b" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [5, 10, 15, 20]


def test_sigint_saves_and_exits_130(tmp_path, tiny_npz):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ccvae", "train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(run),
           "--max-steps", "100000", "--set", "train.checkpoint_every=100000", "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until it is training (metrics rows appear)
        if (run / "metrics.csv").is_file() and len((run / "metrics.csv").read_text().splitlines()) > 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] > 5
    assert "interrupted" in (run / "log.txt").read_text()


def test_nan_stops_with_step_and_term(tmp_path, tiny_npz, monkeypatch):
    from ccvae.cycle import CycleLosses
    from ccvae.train import prepare_run_dir

    cfg = build_config("smoke", overrides=["train.checkpoint_every=2", "train.log_every=1"])
    run = tmp_path / "run"
    prepare_run_dir(run, resume=False)
    trainer = Trainer(cfg, load_dataset(tiny_npz), run, torch.device("cpu"), quiet=True)
    orig = CycleLosses.forward_cycle
    calls = {"n": 0}

    def poisoned(self, x1, x2, eps):
        calls["n"] += 1
        loss, recon, kl = orig(self, x1, x2, eps)
        if calls["n"] == 5:
            return loss * float("nan"), recon, kl * float("inf")
        return loss, recon, kl

    monkeypatch.setattr(CycleLosses, "forward_cycle", poisoned)
    with pytest.raises(TrainingDiverged, match="kl loss is inf at step 5"):
        trainer.run()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_bad_inputs(tmp_path, capsys, tiny_npz):
    assert_clean_error(*cli(capsys, "train", "--data", str(tiny_npz), "--set", "model.foo=1", "--out",
                            str(tmp_path / "x"))[::2], "model.foo")
    assert_clean_error(*train_cli(capsys, tiny_npz, tmp_path / "x", "--set", "train.lr=-1")[::2], "train.lr")
    assert_clean_error(*train_cli(capsys, tiny_npz, tmp_path / "x", "--set", "train.batch_size=1")[::2], "batch_size")
    assert_clean_error(*train_cli(capsys, tmp_path / "none.npz", tmp_path / "x")[::2], "none.npz")
    assert not (tmp_path / "x").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_clean_error(*train_cli(capsys, tiny_npz, blocker / "run")[::2], "cannot create")
    # An existing run is never overwritten.
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "run")
    assert code == 0, err
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    assert_clean_error(*train_cli(capsys, tiny_npz, tmp_path / "run")[::2], "already exists", "--resume")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before
    # --resume without a checkpoint.
    (tmp_path / "empty").mkdir()
    assert_clean_error(*cli(capsys, "train", "--data", str(tiny_npz), "--out", str(tmp_path / "empty"),
                            "--resume")[::2], "no checkpoints/last.pt")


@pytest.mark.parametrize("damage", ["truncated", "foreign", "mismatch"])
def test_bad_checkpoint_on_resume(tmp_path, capsys, tiny_npz, damage):
    run = tmp_path / "run"
    code, _, err = train_cli(capsys, tiny_npz, run, "--max-steps", "10")
    assert code == 0, err
    ckpt = run / "checkpoints" / "last.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:3000])
        needle = "truncated"
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, ckpt)
        needle = "not a ccvae checkpoint"
    else:
        cfg = json.loads((run / "config.json").read_text())
        cfg["model"]["style_dim"] = 9
        (run / "config.json").write_text(json.dumps(cfg))
        needle = "does not match"
    before = ckpt.read_bytes()
    code, _, err = cli(capsys, "train", "--data", str(tiny_npz), "--out", str(run), "--resume", "--max-steps", "20",
                       "--quiet", "--device", "cpu")
    assert_clean_error(code, err, needle)
    assert ckpt.read_bytes() == before


@pytest.mark.slow
def test_ddp_two_processes(tmp_path, tiny_npz):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "ccvae", "train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(run), "--quiet",
           "--device", "cpu"]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "2 process(es)" in log and "replicas identical across 2 ranks: True" in log
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # one writer: rank 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())
