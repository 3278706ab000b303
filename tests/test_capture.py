"""The captured step's path on the CPU (``CapturedStep(use_graph=False)``): static buffers, tensor learning rates
and KL factor, one form per step variant, warm-up steps undone. The graph itself is tested in test_cuda.py."""

from __future__ import annotations

import pytest
import torch

from ccvae import load_dataset
from ccvae.config import build_config
from ccvae.errors import UserError
from ccvae.train import Trainer, lr_factor

# Every per-step input the graph must read from tensors: a cosine lr, a KL warm-up and two step forms.
MOVING = ["train.precision=fp32", "train.lr_schedule=cosine", "train.kl_warmup_steps=4", "train.reverse_every=2",
          "train.max_steps=8"]


def _trainer(tmp_path, data, *overrides, method="ccvae", name="run") -> Trainer:
    cfg = build_config("smoke", overrides=[*MOVING, *overrides], method=method)
    torch.manual_seed(0)
    return Trainer(cfg, load_dataset(data), tmp_path / name, torch.device("cpu"), quiet=True)


def _steps(t: Trainer, n: int) -> list[torch.Tensor]:
    order = t.epoch_order(0)
    out = []
    for i in range(n):
        out.append(t.train_step(order[i * t.local_batch:(i + 1) * t.local_batch]).clone())  # advances t.step
    return out


@pytest.mark.parametrize(("method", "extra", "forms"), [
    ("ccvae", [], {True, False}),  # with and without the reverse cycle
    # A cross-cycle that joins at step 3: before and after it, each with and without the reverse cycle.
    ("ccvae", ["train.cross_cycle_coef=1.0", "train.cross_cycle_start=3"],
     {(True, False), (False, False), (True, True), (False, True)}),
    ("ccvae", ["train.independence_coef=20.0"], {True, False}),  # the critic's own Adam step
    ("mlvae", [], None)])
def test_captured_path_equals_the_plain_step_bit_for_bit(tmp_path, tiny_npz, method, extra, forms):
    """Same optimisers (tensor lr) and generators: the captured path's losses and weights equal the plain step's
    at every step, so the warm-up steps left nothing behind and every moving input reached the step."""
    plain = _trainer(tmp_path, tiny_npz, *extra, method=method, name="a")
    plain.method.capturable = True  # the same tensor-lr Adam, but the ordinary step
    plain.build_optimizers()
    cap = _trainer(tmp_path, tiny_npz, *extra, method=method, name="b")
    cap.use_captured_step(use_graph=False)
    a, b = _steps(plain, 8), _steps(cap, 8)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), (i, x, y)
    if forms is not None:
        assert set(cap.captured.graphs) == forms
    for (k, v), w in zip(plain.method.state_dict().items(), cap.method.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    for name, opt in plain.optimizers.items():
        for p, q in zip(opt.param_groups[0]["params"], cap.optimizers[name].param_groups[0]["params"], strict=True):
            for k, v in opt.state[p].items():
                assert torch.equal(v, cap.optimizers[name].state[q][k]), (name, k)


def test_tensor_lr_follows_the_schedule_and_matches_float_lr(tmp_path, tiny_npz):
    """The lr tensor holds the schedule's value at each step, and the first step with it equals the float-lr Adam
    of the eager path to float32 rounding of the lr. (Later steps drift: Adam's first updates are close to
    sign(grad), which turns a 1-ulp lr difference into lr-sized moves.)"""
    eager = _trainer(tmp_path, tiny_npz, name="a")
    cap = _trainer(tmp_path, tiny_npz, name="b")
    cap.use_captured_step(use_graph=False)
    order = cap.epoch_order(0)
    for i in range(6):
        flat = order[i * cap.local_batch:(i + 1) * cap.local_batch]
        eager.train_step(flat)
        cap.train_step(flat)
        assert eager.step == cap.step == i + 1  # train_step counts the step it ran
        want = cap.cfg.train.lr * lr_factor(cap.cfg.train, i, cap.steps_per_epoch, cap.total_steps)
        for opt in cap.optimizers.values():
            lr = opt.param_groups[0]["lr"]
            assert torch.is_tensor(lr) and lr.item() == pytest.approx(want, rel=1e-6)
        assert cap.method.kl_scale.item() == pytest.approx(min(1.0, i / 4))
        if i == 0:  # weights only: a conv bias before batch norm has a ~0 gradient, which Adam turns into +-lr
            for (k, v), w in zip(eager.model.state_dict().items(), cap.model.state_dict().values(), strict=True):
                if k.endswith("weight"):
                    torch.testing.assert_close(w, v, rtol=1e-6, atol=1e-7, msg=k)


def test_warmup_is_undone_exactly(tmp_path, tiny_npz):
    """Capturing a second form mid-run (after real steps) restores weights, buffers, Adam state and generators."""
    t = _trainer(tmp_path, tiny_npz)
    t.use_captured_step(use_graph=False)
    _steps(t, 1)  # step 0 captures the reverse form; Adam state now exists
    before = {k: v.clone() for k, v in t.method.state_dict().items()}
    adam = {n: {id(p): {k: v.clone() for k, v in s.items()} for p, s in o.state.items()} for n, o in t.optimizers.items()}
    gens = (t.g_data.get_state(), t.g_noise.get_state())
    t.captured._capture(t.method.step_variant(1), 1)  # the form without the reverse cycle: 3 warm-up steps
    for k, v in t.method.state_dict().items():
        assert torch.equal(v, before[k]), k
    for n, o in t.optimizers.items():
        for p, s in o.state.items():
            for k, v in s.items():
                assert torch.equal(v, adam[n][id(p)][k]), (n, k)
    assert torch.equal(t.g_data.get_state(), gens[0]) and torch.equal(t.g_noise.get_state(), gens[1])


@pytest.mark.parametrize("overrides,method,needle", [
    ([], "ccvae", "needs a CUDA device"),
    (["train.compile=default"], "ccvae", "alternatives"),
])
def test_capture_refused_where_it_cannot_work(tmp_path, tiny_npz, overrides, method, needle):
    with pytest.raises(UserError, match=needle):
        _trainer(tmp_path, tiny_npz, "train.capture=cuda-graph", *overrides, method=method)


def test_throttled_discriminator_blocks_capture(tmp_path, tiny_npz):
    cfg = build_config("smoke", overrides=["method.disc_max_accuracy=0.8"], method="mathieu")
    t = Trainer(cfg, load_dataset(tiny_npz), tmp_path / "m", torch.device("cpu"), quiet=True)
    assert "disc_max_accuracy" in t.method.capture_blocker()
    assert _trainer(tmp_path, tiny_npz, method="szabo", name="s").method.capture_blocker() is None


def test_checkpoints_cross_between_eager_and_captured_steps(tmp_path, tiny_npz):
    """A checkpoint of the captured path resumes an eager run and the other way round: each keeps its own lr form
    (float or tensor) and Adam flags, and takes the saved Adam state."""
    cap = _trainer(tmp_path, tiny_npz, name="c")
    cap.use_captured_step(use_graph=False)
    eager = _trainer(tmp_path, tiny_npz, name="e")
    _steps(cap, 2)
    _steps(eager, 2)
    for src, dst, tensor_lr in ((cap, _trainer(tmp_path, tiny_npz, name="e2"), False),
                                (eager, _trainer(tmp_path, tiny_npz, name="c2"), True)):
        if tensor_lr:
            dst.use_captured_step(use_graph=False)
        dst.load_state(src.state(), tmp_path / "last.pt")
        for name, opt in dst.optimizers.items():
            assert torch.is_tensor(opt.param_groups[0]["lr"]) == tensor_lr
            p = opt.param_groups[0]["params"][0]
            q = src.optimizers[name].param_groups[0]["params"][0]
            assert torch.equal(opt.state[p]["exp_avg"], src.optimizers[name].state[q]["exp_avg"])
        _steps(dst, 1)  # and it trains
