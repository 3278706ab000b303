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


# Each bad input of the ccvae command, and the words its one-line error must hold.
BAD_BEFORE_TORCH = [
    (["train", "--set", "train.lr=inf"], "train.lr must be a finite number"),
    (["train", "--set", "model.nope=1"], "unknown config key 'model.nope'"),
    (["train", "--preset", "smoke", "--data", "{tmp}/missing.npz"], "data file not found"),
    (["evaluate", "{tmp}", "--data", "{tmp}/missing.npz"], "data file not found"),
    (["data", "info", "--data", "{tmp}/missing.npz"], "data file not found"),
    (["data", "prepare", "--source", "{tmp}/missing", "--out", "{tmp}/o.npz", "--quiet"], "missing"),
    (["report", "{tmp}"], "metrics.json: not found"),
]


def test_bad_input_fails_before_torch_loads(tmp_path):
    """Options, config values, paths and run files are checked before torch is imported (about 2 s on 2 cores), so
    a mistyped command fails at once; a fresh interpreter per command, since this one has torch already."""
    for argv, needle in BAD_BEFORE_TORCH:
        argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
        code = ("import sys; from ccvae.cli import main; rc = main(sys.argv[1:]); "
                "print('torch' in sys.modules); raise SystemExit(rc)")
        p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=ENV, timeout=120)
        assert_clean_error(p.returncode, p.stderr, needle)
        assert p.stdout.strip() == "False", (argv, "torch was imported")


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
    assert state["step"] == 20 and {"optimizers", "extras", "rng"} <= set(state)
    assert set(state["optimizers"]) == {"fwd", "rev"} and state["method"] == "ccvae"
    model, cfg2 = load_run(run)
    mu, logvar, s = model.encode(torch.rand(2, 3, 60, 60))
    assert model.decode(mu, s).shape == (2, 3, 60, 60) and cfg2.model.style_dim == 8


def test_epoch_checkpoints(tmp_path, capsys, tiny_npz):
    # tiny: 6 train characters x 178 poses / batch 8 = 133 steps per epoch
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "run", "--max-steps", "140", "--set",
                             "train.checkpoint_every=1000")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_1.pt", "last.prev.pt", "last.pt"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_1.pt")["step"] == 133


@pytest.mark.parametrize("memory_format", ["auto", "channels_last"])
def test_resume_equivalence(tmp_path, capsys, tiny_npz, memory_format):
    """Stopped after a checkpoint and resumed == uninterrupted, bit for bit, on CPU (channels_last: the
    weights and Adam's state come back in NHWC from the checkpoint)."""
    fmt = ["--set", f"train.memory_format={memory_format}"]
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "a", "--max-steps", "20", *fmt)
    assert code == 0, err
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "b", "--max-steps", "10", *fmt)
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


# A Ctrl-C whose KeyboardInterrupt Python raises inside a weakref callback (as importlib's module-lock callback runs
# during the long torch import), where it is printed as "Exception ignored" and dropped.
SWALLOWED_CTRL_C = """
import signal, sys, weakref
import ccvae.data.paths as paths
from ccvae.cli import main
real = paths.resolve_data_path
class Thing: pass
def resolve_with_a_swallowed_ctrl_c(path):
    thing = Thing()
    ref = weakref.ref(thing, lambda r: signal.raise_signal(signal.SIGINT))
    del thing  # the callback runs here; the handler's KeyboardInterrupt is raised inside it
    return real(path)
paths.resolve_data_path = resolve_with_a_swallowed_ctrl_c
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_swallowed_ctrl_c_still_stops_the_command(tmp_path, tiny_npz):
    """The Ctrl-C counts although Python dropped its KeyboardInterrupt: exit 130 with one line, nothing trained,
    and the same command runs afterwards."""
    run = tmp_path / "run"
    argv = ["train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(run), "--max-steps", "4", "--quiet",
            "--device", "cpu"]
    p = subprocess.run([sys.executable, "-c", SWALLOWED_CTRL_C, *argv], capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip().splitlines() == ["ccvae: interrupted"], p.stderr
    assert not (run / "checkpoints" / "last.pt").exists()
    p = subprocess.run([sys.executable, "-m", "ccvae", *argv], capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 0, p.stderr


def test_nan_stops_with_step_and_term(tmp_path, tiny_npz, monkeypatch):
    from ccvae.methods.ccvae import CycleVAE
    from ccvae.train import prepare_run_dir

    cfg = build_config("smoke", overrides=["train.checkpoint_every=2", "train.log_every=1"])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    prepare_run_dir(run, resume=False)
    trainer = Trainer(cfg, load_dataset(tiny_npz), run, torch.device("cpu"), quiet=True)
    orig = CycleVAE.loss_forward
    calls = {"n": 0}

    def poisoned(self, x1, x2, eps):
        calls["n"] += 1
        loss, recon, kl = orig(self, x1, x2, eps)
        if calls["n"] == 5:
            return loss * float("nan"), recon, kl * float("inf")
        return loss, recon, kl

    monkeypatch.setattr(CycleVAE, "loss_forward", poisoned)
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
    assert_clean_error(*train_cli(capsys, tiny_npz, tmp_path / "x", "--set", "train.memory_format=nhwc")[::2],
                       "train.memory_format must be one of auto, channels_last, contiguous")
    assert_clean_error(*train_cli(capsys, tmp_path / "none.npz", tmp_path / "x")[::2], "none.npz")
    assert not (tmp_path / "x").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_clean_error(*train_cli(capsys, tiny_npz, blocker / "run")[::2], "cannot create")
    # An existing run is never overwritten.
    code, _, err = train_cli(capsys, tiny_npz, tmp_path / "run")
    assert code == 0, err
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    assert_clean_error(*train_cli(capsys, tiny_npz, tmp_path / "run")[::2], "already holds a trained run", "--resume")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before
    # --resume without a checkpoint.
    (tmp_path / "empty").mkdir()
    assert_clean_error(*cli(capsys, "train", "--data", str(tiny_npz), "--out", str(tmp_path / "empty"),
                            "--resume")[::2], "no checkpoint to resume from", "without --resume")


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
@pytest.mark.parametrize("method,port,sets", [
    ("ccvae", 29517, []), ("mathieu", 29518, []),  # mathieu: a discriminator too
    # the decoder's reverse-cycle terms in the forward step: one "joint" call, then "reencode"
    ("ccvae", 29519, ["train.reverse_identity_coef=0.5", "train.reverse_decoder_step=forward"]),
    # NHWC weights and gradients through DDP's buckets (the quick presets' batch norm, where auto may pick it),
    # and the weights' moving average, which every rank keeps and rank 0 saves
    ("ccvae", 29520, ["train.memory_format=channels_last", "model.norm=batch", "model.dec_norm=batch",
                      "train.ema_decay=0.9"])])
def test_ddp_two_processes(tmp_path, tiny_npz, method, port, sets):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "ccvae", "train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(run), "--quiet",
           "--device", "cpu", "--method", method, "--set", "method.disc_max_accuracy=0.9",
           *[a for s in sets for a in ("--set", s)]]
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
    assert ("ema" in state) == any(s.startswith("train.ema_decay") for s in sets)
    if "ema" in state:
        assert state["ema"]["updates"] == 20 and all(torch.isfinite(v).all() for v in state["ema"]["weights"].values())


def test_lr_schedules_and_kl_warmup():
    from ccvae.train import lr_factor

    t = build_config("quick", overrides=["train.lr_decay_steps=0"]).train  # the authors' decay after N epochs
    assert lr_factor(t, 0, 2781, 10_000) == 1.0
    assert lr_factor(t, 3 * 2781 - 1, 2781, 10_000) == 1.0 and lr_factor(t, 3 * 2781, 2781, 10_000) == 0.2
    q = build_config("quick").train  # the preset decays at 83 % of its 7,874 steps, inside its epochs
    assert lr_factor(q, 6_549, 2781, q.max_steps) == 1.0 and lr_factor(q, 6_550, 2781, q.max_steps) == 0.2
    assert q.max_steps <= q.epochs * 2781
    c = build_config("quick", overrides=["train.lr_schedule=cosine"]).train
    assert lr_factor(c, 0, 2781, 10_000) == 1.0 and abs(lr_factor(c, 5_000, 2781, 10_000) - 0.5) < 1e-12
    assert lr_factor(c, 10_000, 2781, 10_000) < 1e-12
    s = build_config("quick", overrides=["train.lr_decay_steps=6100"]).train  # steps, not epochs
    assert lr_factor(s, 6099, 2781, 7_352) == 1.0 and lr_factor(s, 6100, 2781, 7_352) == 0.2
    assert abs(lr_factor(s, 12_200, 2781, 20_000) - 0.04) < 1e-12


@pytest.mark.parametrize("method", ["ccvae", "mathieu"])
def test_channels_last_is_the_same_maths(tmp_path, tiny_npz, method):
    """train.memory_format changes the layout only: channels_last keeps 4-D weights (and Adam's state) in
    NHWC, and three fp32 steps give the losses and weights of the contiguous layout. (mathieu: its
    discriminator's GroupNorm in NHWC too.)"""
    data = load_dataset(tiny_npz)
    trainers = {}
    for fmt in ("channels_last", "contiguous"):
        cfg = build_config("smoke", overrides=[f"train.memory_format={fmt}", "train.precision=fp32"], method=method)
        trainers[fmt] = Trainer(cfg, data, tmp_path / fmt, torch.device("cpu"), quiet=True)
    assert [tr.memory_format for tr in trainers.values()] == ["channels_last", "contiguous"]
    convs = [p for p in trainers["channels_last"].method.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    losses = {}
    for fmt, tr in trainers.items():
        order = tr.epoch_order(0)
        B = tr.local_batch
        losses[fmt] = torch.stack([tr.train_step(order[i * B:(i + 1) * B]) for i in range(3)])
    # Convolutions in another layout sum in another order. Before any update that is all that differs: every term
    # agrees closely. After updates, terms that are small differences (the reverse cycle's L1 between two
    # near-equal z means, a KL near 0) magnify those last bits (up to 8 % by the third step on a Zen 4), while
    # the reconstruction stays within 1e-6; a wrong layout would be off from the first step.
    cl, c = losses["channels_last"], losses["contiguous"]
    assert torch.allclose(cl[0], c[0], rtol=1e-3, atol=1e-7)
    assert torch.allclose(cl[:, 0], c[:, 0], rtol=1e-4, atol=0)
    adam = next(iter(trainers["channels_last"].optimizers.values()))
    assert any(st["exp_avg"].dim() == 4 and st["exp_avg"].is_contiguous(memory_format=torch.channels_last)
               and not st["exp_avg"].is_contiguous() for st in adam.state.values())
    a, b = (tr.method.state_dict() for tr in trainers.values())
    # Adam moves a weight by about lr per update whatever its gradient's size, so a weight whose true gradient is
    # ~0 (a convolution's bias before batch norm) follows the sign of rounding noise: up to lr per optimiser a step.
    bound = 3 * len(trainers["contiguous"].optimizers) * trainers["contiguous"].cfg.train.lr
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=0, atol=bound), k


def test_auto_memory_format_follows_the_measurements(monkeypatch, tiny_npz, tmp_path):
    """auto: NHWC only where benchmarks/memory_format.py measured it faster (a batch-norm network on a CPU,
    in fp32 or with AMX); instance norm (GroupNorm), bf16 without AMX and CUDA stay contiguous."""
    from ccvae import hardware
    from ccvae.hardware import resolve_memory_format

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for amx in (False, True):
        monkeypatch.setattr(hardware, "cpu_has_amx", lambda amx=amx: amx)
        assert resolve_memory_format("auto", cpu, "fp32", has_instance_norm=False) == "channels_last"
        assert resolve_memory_format("auto", cpu, "bf16", False) == ("channels_last" if amx else "contiguous")
        assert resolve_memory_format("auto", cpu, "fp32", has_instance_norm=True) == "contiguous"
        assert resolve_memory_format("auto", cuda, "fp32", False) == "contiguous"
        assert resolve_memory_format("contiguous", cpu, "fp32", False) == "contiguous"
        assert resolve_memory_format("channels_last", cpu, "bf16", True) == "channels_last"
    # The Trainer asks with its own network: smoke has instance norm, the quick preset's network batch norm.
    data = load_dataset(tiny_npz)
    for norm, expected in (("instance", "contiguous"), ("batch", "channels_last")):
        cfg = build_config("smoke", overrides=["train.precision=fp32", f"model.norm={norm}", f"model.dec_norm={norm}"])
        assert Trainer(cfg, data, tmp_path / norm, cpu, quiet=True).memory_format == expected
    assert build_config("quick").model.norm == build_config("quick").model.dec_norm == "batch"


def test_reverse_options_train_and_resume_identically(tmp_path, capsys, tiny_npz):
    """Posterior z, running statistics, every-other-step reverse cycle and KL warm-up: a resumed run equals
    an uninterrupted one, and the eval-mode reverse-cycle L1 is logged. (Not the cosine schedule here: it
    spans the run's total steps, which this test changes on resume; lr_factor is tested on its own.)"""
    opts = ["--set", "train.reverse_z=posterior", "--set", "train.reverse_norm_stats=running", "--set",
            "train.reverse_every=2", "--set", "train.kl_warmup_steps=10",
            "--set", "model.norm=batch", "--set", "model.dec_norm=batch", "--max-steps", "30"]
    assert train_cli(capsys, tiny_npz, tmp_path / "a", *opts)[0] == 0
    assert train_cli(capsys, tiny_npz, tmp_path / "b", *opts[:-1], "15")[0] == 0
    assert cli(capsys, "train", "--data", str(tiny_npz), "--out", str(tmp_path / "b"), "--resume", "--max-steps",
               "30", "--quiet", "--device", "cpu")[0] == 0
    a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["model"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "a" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["reverse_cycle_eval"]) >= 0 for r in rows)


def test_kill9_at_random_moments_then_resume(tmp_path, tiny_npz):
    """kill -9 at five random moments, each followed by --resume: the weights equal an uninterrupted run's."""
    import random

    steps = ["--max-steps", "120", "--set", "train.checkpoint_every=7"]
    base = [sys.executable, "-m", "ccvae", "train", "--data", str(tiny_npz), "--preset", "smoke", "--quiet",
            "--device", "cpu"]
    ref = tmp_path / "ref"
    subprocess.run([*base, "--out", str(ref), *steps], env=ENV, check=True, capture_output=True)
    run = tmp_path / "run"
    resume = [sys.executable, "-m", "ccvae", "train", "--data", str(tiny_npz), "--out", str(run), "--resume",
              "--max-steps", "120", "--quiet", "--device", "cpu"]
    # Fresh until a checkpoint exists (a folder killed before its first one is simply reused), then --resume.
    command = lambda: resume if (run / "checkpoints" / "last.pt").is_file() else [*base, "--out", str(run), *steps]  # noqa: E731
    rng = random.Random(0)
    for _ in range(5):
        proc = subprocess.Popen(command(), env=ENV, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))  # from start-up to mid-training
        proc.kill()
        proc.wait()
    subprocess.run(command(), env=ENV, check=True, capture_output=True)
    a = load_checkpoint(ref / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
