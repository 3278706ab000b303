"""The GPU path. Every test here needs CUDA and skips without it (``benchmarks/gpu_check.sh`` runs them on a
lent GPU with ``-m cuda``); none of them has run on a GPU yet unless a gpu_check summary says so."""

from __future__ import annotations

import pytest
import torch
from test_capture import _steps

from ccvae import load_dataset
from ccvae.config import build_config
from ccvae.train import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run benchmarks/gpu_check.sh on a GPU)")]

METHODS = ("ccvae", "mathieu", "szabo", "mlvae")


def _trainer(tmp_path, data_path, device, *overrides, method="ccvae", name="run"):
    cfg = build_config("smoke", overrides=["train.max_steps=6", "train.log_every=3", "train.checkpoint_every=3",
                                           *overrides], method=method)
    torch.manual_seed(0)
    return Trainer(cfg, load_dataset(data_path, device), tmp_path / name, torch.device(device), quiet=True)


class _OnDevice:
    """A method whose inputs (the test helper draws them on the CPU) are moved to ``device`` first."""

    def __init__(self, method, device: str) -> None:
        self._m, self._device = method, device

    def __call__(self, mode, *args):
        return self._m(mode, *(a.to(self._device) for a in args))

    def __getattr__(self, k):
        return getattr(self._m, k)


@pytest.mark.parametrize("method", METHODS)
def test_cuda_step_equals_cpu_step_in_fp32(method):
    """Same weights and the same batch and noise on both devices: the loss terms, and the weights after one
    optimiser step of the generator side, agree within fp32 rounding (TF32 off)."""
    from test_methods import _batch, _generator_loss, _method

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    for device in ("cpu", "cuda"):
        _, m = _method(method, seed=0)
        m = m.to(device)
        opt = m.adam(m.generator_parameters(), lr=1e-3)
        x, g = _batch(1)
        x = [t.to(device) for t in x]
        gen = torch.Generator().manual_seed(5)

        out = _generator_loss(_OnDevice(m, device), x, gen)
        out[0].backward()
        opt.step()
        results.append(([t.detach().float().cpu() for t in out[:3] if t.dim() == 0],
                        {k: v.detach().cpu() for k, v in m.state_dict().items()}))
    (l_cpu, w_cpu), (l_gpu, w_gpu) = results
    for a, b in zip(l_cpu, l_gpu, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    for k, v in w_cpu.items():
        torch.testing.assert_close(w_gpu[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_bf16_autocast_loss_close_to_fp32(tmp_path, tiny_npz):
    fp32 = _trainer(tmp_path, tiny_npz, "cuda", "train.precision=fp32", name="a")
    bf16 = _trainer(tmp_path, tiny_npz, "cuda", "train.precision=bf16", name="b")
    bf16.model.load_state_dict(fp32.model.state_dict())
    flat = fp32.epoch_order(0)[:fp32.local_batch]
    a, b = fp32.train_step(flat), bf16.train_step(flat)
    n = len(fp32.method.TERMS)
    torch.testing.assert_close(b[:2].cpu(), a[:2].cpu(), rtol=5e-2, atol=1e-4)  # reconstruction, KL
    assert torch.isfinite(b[:n]).all()


def test_resume_on_cuda_continues_identically(tmp_path, tiny_npz, capsys):
    from ccvae.checkpoint import load_checkpoint
    from ccvae.cli import main

    def train(out, *extra):
        code = main(["train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(out), "--quiet",
                     "--device", "cuda", "--set", "train.precision=fp32", *extra])
        assert code == 0, capsys.readouterr().err

    torch.use_deterministic_algorithms(True, warn_only=True)
    train(tmp_path / "a", "--max-steps", "20")
    train(tmp_path / "b", "--max-steps", "10")
    assert main(["train", "--data", str(tiny_npz), "--out", str(tmp_path / "b"), "--resume", "--max-steps", "20",
                 "--quiet", "--device", "cuda"]) == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    for k in a:  # cuDNN may pick other kernels across processes: equal to rounding, not bitwise
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("method,capture", [*((m, "off") for m in METHODS), ("ccvae", "cuda-graph"),
                                            ("mlvae", "cuda-graph")])
def test_no_host_sync_inside_the_step(tmp_path, tiny_npz, method, capture):
    """The step loop never waits for the GPU: any synchronising call inside ``train_step`` (or around a graph
    replay) raises."""
    t = _trainer(tmp_path, tiny_npz, "cuda", f"train.capture={capture}", method=method)
    flat = t.epoch_order(0)[:t.local_batch]
    t.train_step(flat)  # warm-up (lazy inits may sync) or the capture
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            t.train_step(flat)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("method", ("ccvae", "mlvae", "szabo"))
def test_captured_graph_equals_the_same_step_without_graph(tmp_path, tiny_npz, method):
    """Replaying the graph computes what the same step computes eagerly from the same default generator: losses
    and weights agree to rounding over 6 steps in which the lr, the KL warm-up and (ccvae) the step's form change."""
    moving = ["train.precision=fp32", "train.lr_schedule=cosine", "train.kl_warmup_steps=4", "train.reverse_every=2"]
    if method != "ccvae":
        moving.append("method.disc_max_accuracy=1.0")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    graph = _trainer(tmp_path, tiny_npz, "cuda", *moving, "train.capture=cuda-graph", method=method, name="graph")
    plain = _trainer(tmp_path, tiny_npz, "cuda", *moving, method=method, name="plain")
    plain.method.load_state_dict(graph.method.state_dict())
    plain.use_captured_step(use_graph=False, own_generators=False)
    torch.cuda.manual_seed(123)  # the default generator: what a captured step draws from
    a = _steps(graph, 6)
    torch.cuda.manual_seed(123)
    b = _steps(plain, 6)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        torch.testing.assert_close(x.cpu(), y.cpu(), rtol=1e-4, atol=1e-6, msg=f"step {i}")
    if method == "ccvae":
        assert set(graph.captured.graphs) == {True, False}
    for (k, v), w in zip(graph.method.state_dict().items(), plain.method.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=1e-4, atol=1e-5, msg=k)


def test_captured_resume_continues_identically(tmp_path, tiny_npz, capsys):
    from ccvae.checkpoint import load_checkpoint
    from ccvae.cli import main

    base = ["train", "--data", str(tiny_npz), "--quiet", "--device", "cuda"]
    opts = ["--preset", "smoke", "--set", "train.precision=fp32", "--set", "train.capture=cuda-graph"]
    assert main([*base, *opts, "--out", str(tmp_path / "a"), "--max-steps", "20"]) == 0, capsys.readouterr().err
    assert main([*base, *opts, "--out", str(tmp_path / "b"), "--max-steps", "10"]) == 0, capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--resume", "--max-steps", "20"]) == 0, capsys.readouterr().err
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
