"""Every method behind the one interface: gradients, the generator/discriminator split, resume, loss descent,
and ``ccvae compare``."""

from __future__ import annotations

import pytest
import torch
from conftest import images_loaded_in_chromium

from ccvae import load_dataset
from ccvae.checkpoint import load_checkpoint
from ccvae.cli import main
from ccvae.config import build_config
from ccvae.evaluate.probes import ProbeSettings
from ccvae.evaluate.runner import EvalSettings, evaluate_run
from ccvae.methods import METHODS, StepContext, build_method
from ccvae.methods.base import with_fixed_weights
from ccvae.methods.mlvae import product_of_gaussians
from ccvae.model import CCVAE

ADVERSARIAL = ("mathieu", "szabo")


def _method(name: str, seed: int = 0):
    cfg = build_config("smoke", overrides=["model.style_dim=6", "model.class_dim=5", "train.precision=fp32"],
                       method=name)
    torch.manual_seed(seed)
    return cfg, build_method(cfg, CCVAE(cfg.model))


def _batch(seed: int, b: int = 4):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, 60, 60, generator=g) for _ in range(3)], g


def _generator_loss(method, x, g):
    """The generator-side loss of one step, on fixed tensors: (loss, *terms)."""
    x1, x2, x3 = x
    b, d = x1.shape[0], method.cfg.model
    if method.name == "ccvae":
        return method("forward", x1, x2, torch.randn(2 * b, d.style_dim, generator=g))
    if method.name == "mathieu":
        return method("generator", x1, x2, x3, torch.randn(3 * b, d.style_dim, generator=g),
                      torch.randn(b, d.style_dim, generator=g))
    if method.name == "szabo":
        return method("generator", x1, x2, x3)
    return method("elbo", x1, x2, torch.randn(2 * b, d.style_dim, generator=g), torch.randn(b, d.class_dim, generator=g))


@pytest.mark.parametrize("name", list(METHODS))
def test_every_generator_parameter_gets_a_gradient(name):
    _, method = _method(name)
    x, g = _batch(1)
    out = _generator_loss(method, x, g)
    out[0].backward()
    params = dict(method.named_parameters())
    trained = {id(p) for p in method.generator_parameters()}
    assert trained, name
    for k, p in params.items():
        if id(p) not in trained:
            continue
        assert p.grad is not None, k
        assert torch.isfinite(p.grad).all(), k
        assert p.grad.abs().sum() > 0, k
    if name == "szabo":  # deterministic z: the log-variance head is fixed, not trained
        assert not method.model.encoder.z_logvar.weight.requires_grad
        assert id(method.model.encoder.z_logvar.bias) not in trained


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_discriminator_and_generator_steps_move_only_their_own_weights(name, tiny_npz):
    """Through the real training step: around the generator's optimiser step the discriminator's weights
    stay bitwise equal, and around the discriminator's the generator's do."""
    cfg, method = _method(name)
    data = load_dataset(tiny_npz)
    opts = method.make_optimizers()
    disc = lambda: [p.detach().clone() for p in method.extras.parameters()]  # noqa: E731
    gen = lambda: [p.detach().clone() for p in method.model.parameters()]  # noqa: E731
    seen = {}

    def watch(opt, key, snapshot):
        step = opt.step

        def wrapped(*a, **k):
            before = snapshot()
            out = step(*a, **k)
            seen[key] = all(torch.equal(u, v) for u, v in zip(before, snapshot(), strict=True))
            return out
        opt.step = wrapped

    watch(opts["gen"], "disc unchanged by generator step", disc)
    watch(opts["disc"], "generator unchanged by discriminator step", gen)
    g0 = gen()
    d0 = disc()
    ctx = StepContext(data, torch.arange(4), torch.Generator().manual_seed(0), torch.Generator().manual_seed(1),
                      torch.device("cpu"), "fp32", 0, method, opts)
    values, ran = method.train_step(ctx)
    assert seen == {"disc unchanged by generator step": True, "generator unchanged by discriminator step": True}
    assert any(not torch.equal(a, b) for a, b in zip(g0, gen(), strict=True))  # both did move
    assert any(not torch.equal(a, b) for a, b in zip(d0, disc(), strict=True))
    assert values.shape == ran.shape == (len(method.TERMS),) and torch.isfinite(values).all()


@pytest.mark.parametrize("name", list(METHODS))
def test_losses_finite_and_decrease_on_a_fixed_batch(name, tiny_npz):
    _, method = _method(name, seed=2)
    data = load_dataset(tiny_npz)  # sprite-like images: noise images would leave little to learn
    g = torch.Generator().manual_seed(3)
    pairs = data.sample_pairs(6, g)
    x = [pairs.x1, pairs.x2, data.sample(6, g).x]
    opt = method.adam(method.generator_parameters(), lr=3e-3)
    first = last = None
    for _ in range(40):
        g = torch.Generator().manual_seed(9)  # the same noise every step: a fixed objective
        opt.zero_grad(set_to_none=True)
        out = _generator_loss(method, x, g)
        assert all(torch.isfinite(t).all() for t in out if t.dim() == 0), out
        out[0].backward()
        opt.step()
        recon = out[1].item()
        first = recon if first is None else first
        last = recon
    assert last < 0.7 * first, (first, last)
    if name in ADVERSARIAL:  # the discriminator alone, on fixed real and fake pairs, learns to tell them apart
        d = method.extras["discriminator"]
        d_opt = method.adam(d.parameters(), lr=1e-3)
        fakes = torch.rand(6, 3, 60, 60, generator=torch.Generator().manual_seed(4))
        losses = []
        for _ in range(30):
            d_opt.zero_grad(set_to_none=True)
            loss, _ = method("discriminator", x[0], x[1], fakes)
            loss.backward()
            d_opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], losses


def test_with_fixed_weights_passes_gradients_to_the_inputs_only():
    """A judge with fixed weights: same output as the module, a gradient for what feeds it, none for its weights."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    x = torch.randn(8, 4, requires_grad=True)
    out = with_fixed_weights(net)(x)
    assert torch.equal(out, net(x))
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_product_of_gaussians_matches_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0]), torch.tensor([2.0, -1.0])
    lv1, lv2 = torch.log(torch.tensor([1.0, 4.0])), torch.log(torch.tensor([1.0, 1.0]))
    mu, lv = product_of_gaussians(mu1, lv1, mu2, lv2)
    torch.testing.assert_close(mu, torch.tensor([1.0, (1 / 4 - 1) / (1 / 4 + 1)]))
    torch.testing.assert_close(lv.exp(), torch.tensor([0.5, 1 / (1 / 4 + 1)]))


def _train(capsys, data, out, name, *extra):
    code = main(["train", "--data", str(data), "--preset", "smoke", "--method", name, "--out", str(out), "--quiet",
                 "--device", "cpu", *extra])
    _, err = capsys.readouterr()
    assert code == 0, err


@pytest.mark.parametrize("name", [m for m in METHODS if m != "ccvae"])  # ccvae: test_train.test_resume_equivalence
def test_resume_equals_uninterrupted_including_discriminator(name, tmp_path, capsys, tiny_npz):
    _train(capsys, tiny_npz, tmp_path / "a", name, "--max-steps", "20")
    _train(capsys, tiny_npz, tmp_path / "b", name, "--max-steps", "10")
    code = main(["train", "--data", str(tiny_npz), "--out", str(tmp_path / "b"), "--resume", "--max-steps", "20",
                 "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["method"] == b["method"] == name
    for part in ("model", "extras"):
        assert set(a[part]) == set(b[part])
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for opt in a["optimizers"]:
        for pid, st in a["optimizers"][opt]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b["optimizers"][opt]["state"][pid][k]), (opt, pid, k)


def test_resume_refuses_another_method(tmp_path, capsys, tiny_npz):
    _train(capsys, tiny_npz, tmp_path / "a", "szabo", "--max-steps", "10")
    code = main(["train", "--data", str(tiny_npz), "--out", str(tmp_path / "a"), "--resume", "--method", "mathieu",
                 "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "--method" in err and "Traceback" not in err


def test_compare_page_images_load(tmp_path, capsys, tiny_npz):
    settings = EvalSettings(probe=ProbeSettings(max_epochs=2, patience=1), n_swaps=100, figure_scale=1)
    runs = []
    for name in ("ccvae", "szabo"):
        run = tmp_path / name
        _train(capsys, tiny_npz, run, name)
        evaluate_run(run, tiny_npz, settings, log=lambda m: None)
        runs.append(run)
    code = main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert code == 0, err
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert page.count("<img ") == 2 and "Szabó et al. (2018)" in page and "Cycle-consistent VAE" in page
    assert "same test characters and poses" in page and "99.63" in page  # the paper's Szabó row
    n_img, loaded = images_loaded_in_chromium(page, tmp_path)
    assert loaded == f"{n_img}/{n_img}" == "2/2"


def test_compare_bad_input(tmp_path, capsys):
    code = main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cmp").exists()


def test_cli_names_match_the_config():
    from ccvae import checkpoint, cli, config

    assert cli.PRESET_NAMES == tuple(config.PRESETS) and cli.METHOD_NAMES == config.METHOD_NAMES == tuple(METHODS)
    assert cli.WEIGHTS == checkpoint.WEIGHTS


@pytest.mark.parametrize("override,needle", [
    ("method.name=vae", "method.name must be one of"), ("method.adversarial_coef=-1", "method coefficients"),
    ("method.disc_max_accuracy=0", "disc_max_accuracy"), ("method.nope=1", "unknown config key"),
])
def test_method_config_errors(override, needle):
    from ccvae.errors import UserError

    with pytest.raises(UserError, match=needle):
        build_config("smoke", overrides=[override])


def test_every_study_variant_is_a_valid_config_with_a_cost():
    """Each row of ``benchmarks/quick_study.py`` builds (a typo in an override would otherwise surface 30 minutes into
    a study run) and has its CPU step time; the thirteenth round's winner at its budget is quick-v2, the sixteenth round's row
    at its budget quick-sharp, the same row at the rounds' budget quick-v3 (nineteenth round), and the twenty-first
    round's reverse cycle every third step on it quick-v4, and the twenty-sixth round's critic of I(z; s) on that
    today's quick preset."""
    import json
    from pathlib import Path

    from conftest import load_benchmark

    root = Path(__file__).resolve().parents[1]
    study = load_benchmark("quick_study")
    times = json.loads((root / "docs" / "quick-study-cpu-times.json").read_text())["s_per_step"]
    configs = {}
    for name, sets in study.VARIANTS.items():
        steps = int(study.ROUND_BUDGET_S / times[name])
        configs[name] = build_config(study.PRESET, overrides=[
            *sets, *study.decay_sets(sets, steps, study.DECAY_AT), f"train.max_steps={steps}"])
        assert configs[name].train.max_steps == steps, name
    assert configs["bigdec-kl2-revdec"] == build_config("quick-v2")
    # The nineteenth round's row is quick-v3 and the twenty-first round's rev3-rc30 today's quick preset, but for the
    # epochs' cap (the rows' 10, the presets' 4: their 5,056 and 8,371 steps end inside the second and fourth epoch
    # either way); the sixteenth round's row at its own budget is quick-sharp (epochs capped at 5, after its 12,000
    # steps).
    assert configs["bigdec2-kl2-revdec"].train.max_steps == 5_056
    assert configs["bigdec2-kl2-revdec"] == build_config("quick-v3", overrides=["train.epochs=10"])
    assert configs["bigdec2-kl2-revdec-rev3-rc30"].train.max_steps == 8_371
    assert configs["bigdec2-kl2-revdec-rev3-rc30"] == build_config("quick-v4", overrides=["train.epochs=10"])
    assert configs["bigdec2-kl2-revdec-rev3-rc30-ind20"].train.max_steps == 7_874
    assert configs["bigdec2-kl2-revdec-rev3-rc30-ind20"] == build_config("quick", overrides=["train.epochs=10"])
    sets = study.VARIANTS["bigdec2-kl2-revdec"]
    steps = int(study.SHARP_BUDGET_S / times["bigdec2-kl2-revdec"])
    assert steps == 12_000
    assert build_config(study.PRESET, overrides=[*sets, *study.decay_sets(sets, steps, study.DECAY_AT),
                                                 f"train.max_steps={steps}", "train.epochs=5"]) == build_config("quick-sharp")


def test_quick_presets_of_the_baselines():
    """``--method M --preset quick`` is the tuned quick-M preset: the first quick preset's network (the decoder
    the baselines were sized on, narrower than today's quick preset's), the method's own terms."""
    first = build_config("quick-v1")
    assert first.model.dec_channels == (64, 32, 32, 16) and first.model.dec_hidden == 256
    # quick-v1 is quick-v2 without what the thirteenth round added (the study's rows rerun on it), quick-v3 is
    # quick-v2 with the nineteenth round's wider decoder and fewer steps, quick-v4 is quick-v3 with the twenty-first
    # round's reverse cycle every third step, at three times the weight, for more steps, and today's quick preset is
    # quick-v4 with the twenty-sixth round's critic of I(z; s), for fewer steps.
    second, third, fourth = build_config("quick-v2"), build_config("quick-v3"), build_config("quick-v4")
    today = build_config("quick")
    assert build_config("quick-v1", overrides=[
        "model.dec_channels=[128,64,32,16]", "model.dec_hidden=512", "train.kl_coef=2.0", "train.reverse_updates=all",
        "train.lr_decay_steps=6557", "train.max_steps=7882"]) == second
    assert build_config("quick-v2", overrides=[
        "model.dec_channels=[256,128,64,32]", "model.dec_hidden=1024", "train.lr_decay_steps=4206",
        "train.max_steps=5056"]) == third
    assert build_config("quick-v3", overrides=[
        "train.reverse_every=3", "train.reverse_cycle_coef=30", "train.lr_decay_steps=6964",
        "train.max_steps=8371"]) == fourth
    assert build_config("quick-v4", overrides=[
        "train.independence_coef=20", "train.lr_decay_steps=6550", "train.max_steps=7874"]) == today
    for name in ("mathieu", "szabo", "mlvae"):
        cfg = build_config("quick", method=name)
        assert cfg.method.name == name and cfg.model == first.model
        assert cfg.train.kl_coef == 3.0 and cfg.train.reverse_updates == "encoder"  # the ccvae's knobs stay off
        assert cfg == build_config(f"quick-{name}")
        # the steps are the cap, not the epochs (89,000 training images)
        assert cfg.train.max_steps <= cfg.train.epochs * (89_000 // cfg.train.batch_size)


@pytest.mark.parametrize("name,latents", [("ccvae", 2), ("mathieu", 2), ("mlvae", 3)])
def test_kl_capacity_target(name, latents):
    """With train.kl_capacity the KL term is kl_coef * |KL - C| (C per latent, on the authors' scale): zero where the
    KL meets the target, pushing the KL up below it and down above it; without it, the paper's kl_coef * KL."""
    cfg, m = _method(name)
    numel = 3 * 60 * 60
    kl = torch.tensor(0.004, requires_grad=True)
    assert m.kl_term(kl, numel, latents).item() == pytest.approx(cfg.train.kl_coef * 0.004)
    cfg.train.kl_capacity = 50.0
    m.kl_capacity.fill_(0.004 * numel / latents)  # the trainer's value at this step: the target equals the KL
    assert m.kl_term(kl, numel, latents).item() == pytest.approx(0.0, abs=1e-7)  # float32 rounding
    m.kl_capacity.fill_(0.006 * numel / latents)
    term = m.kl_term(kl, numel, latents)
    term.backward()
    assert term.item() == pytest.approx(cfg.train.kl_coef * 0.002, rel=1e-4) and kl.grad.item() < 0


def test_kl_capacity_rises_over_its_steps(tmp_path, tiny_npz):
    from ccvae import load_dataset
    from ccvae.train import Trainer

    cfg = build_config("smoke", overrides=["train.kl_capacity=20", "train.kl_capacity_steps=4"])
    t = Trainer(cfg, load_dataset(tiny_npz), tmp_path / "r", torch.device("cpu"), quiet=True)
    order = t.epoch_order(0)
    seen = []
    for step in range(6):
        t.step = step
        t.train_step(order[:t.local_batch])
        seen.append(t.method.kl_capacity.item())
    assert seen == pytest.approx([0, 5, 10, 15, 20, 20])
