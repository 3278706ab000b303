"""The model, the loss terms and one step of each cycle."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ccvae.config import PRESETS, Config, build_config
from ccvae.errors import UserError
from ccvae.losses import kl_to_standard_normal
from ccvae.methods.ccvae import CycleVAE, frozen_norm_statistics
from ccvae.model import CCVAE, ModelConfig


@pytest.mark.parametrize("preset", list(PRESETS))
def test_shapes_and_finite(preset):
    cfg = build_config(preset)
    torch.manual_seed(0)
    m = CCVAE(cfg.model)
    x = torch.rand(4, 3, 60, 60)
    mu, logvar, s = m.encode(x)
    assert mu.shape == logvar.shape == (4, cfg.model.style_dim)
    assert s.shape == (4, cfg.model.class_dim)
    y = m.decode(mu, s)
    assert y.shape == (4, 3, 60, 60)
    assert 0 <= y.min() and y.max() <= 1
    for t in (mu, logvar, s, y):
        assert torch.isfinite(t).all()


def test_paper_network_is_the_reference_one():
    m = CCVAE(ModelConfig())
    convs = [mod for mod in m.encoder.convs if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128]
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert ModelConfig().encoder_sizes() == [60, 29, 14, 6, 2]
    assert m.decoder.seed_shape == (256, 2, 2)
    assert m.num_parameters() == 2_799_139  # the figure quoted in the README


def _setup(fast=True, seed=0):
    cfg = build_config("smoke", overrides=["model.style_dim=6", "model.class_dim=5"])
    torch.manual_seed(seed)
    model = CCVAE(cfg.model)
    return cfg, model, CycleVAE(model, cfg, fast=fast)


def test_every_parameter_gets_a_gradient_from_the_forward_cycle():
    cfg, model, losses = _setup()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.rand(4, 3, 60, 60, generator=g), torch.rand(4, 3, 60, 60, generator=g)
    loss, recon, kl = losses("forward", x1, x2, torch.randn(8, 6, generator=g))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_reverse_cycle_updates_encoder_only():
    cfg, model, losses = _setup()
    opt_rev = losses.make_optimizers()["rev"]
    g = torch.Generator().manual_seed(2)
    # Give the decoder stale gradients, as after a forward-cycle step: the reverse step must not use them.
    losses("forward", torch.rand(4, 3, 60, 60), torch.rand(4, 3, 60, 60), torch.randn(8, 6))[0].backward()
    dec_before = copy.deepcopy(model.decoder.state_dict())
    enc_before = copy.deepcopy(model.encoder.state_dict())
    opt_rev.zero_grad(set_to_none=True)
    rev = losses("reverse", torch.rand(4, 3, 60, 60, generator=g), torch.rand(4, 3, 60, 60, generator=g),
                 torch.randn(4, 6, generator=g))[0]
    rev.backward()
    opt_rev.step()
    for k, v in model.decoder.state_dict().items():
        assert torch.equal(v, dec_before[k]), k  # bitwise unchanged
    changed = [k for k, v in model.encoder.state_dict().items() if not torch.equal(v, enc_before[k])]
    assert any(k.startswith("z_mu") for k in changed) and any(k.startswith("convs") for k in changed)
    # s is detached and unused after re-encoding: its head gets no gradient from this loss.
    assert model.encoder.s.weight.grad is None


def _reverse_grads(overrides, fast=True):
    cfg = build_config("smoke", overrides=["model.style_dim=6", *overrides])
    torch.manual_seed(0)
    model = CCVAE(cfg.model)
    losses = CycleVAE(model, cfg, fast=fast)
    g = torch.Generator().manual_seed(2)
    loss, l1, id_l1, _ = losses("reverse", torch.rand(4, 3, 60, 60, generator=g),
                                torch.rand(4, 3, 60, 60, generator=g), torch.randn(4, 6, generator=g))
    loss.backward()
    return losses, {k: p.grad for k, p in model.named_parameters()}, l1, id_l1


@pytest.mark.parametrize("fast", [True, False])
def test_reverse_cycle_can_train_the_decoder_too(fast):
    losses, grads, _, _ = _reverse_grads(["train.reverse_updates=all"], fast)
    model = losses.model
    opt_rev = losses.make_optimizers()["rev"]
    assert {id(p) for g in opt_rev.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    dec_before = copy.deepcopy(model.decoder.state_dict())
    assert all(grads[k] is not None for k, _ in model.decoder.deconvs.named_parameters(prefix="decoder.deconvs"))
    opt_rev.step()
    assert any(not torch.equal(v, dec_before[k]) for k, v in model.decoder.state_dict().items())
    assert grads["encoder.s.weight"] is None  # s stays detached: the decoder learns to meet it, s does not move


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(7, 11, generator=g), torch.randn(7, 11, generator=g)
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = kl_divergence(q, p).sum() / (7 * 3 * 60 * 60)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar, 3 * 60 * 60), expected, rtol=1e-5, atol=1e-9)


def test_forward_cycle_swaps_identity():
    """x1' = dec(z1, s2): changing x2 changes the reconstruction of x1 through s2 only."""
    cfg, model, losses = _setup()
    model.eval()
    x1, x2 = torch.rand(2, 3, 60, 60), torch.rand(2, 3, 60, 60)
    mu1, _, _ = model.encode(x1)
    _, _, s2 = model.encode(x2)
    eps = torch.zeros(4, 6)
    _, recon, _ = losses("forward", x1, x2, eps)
    mu2, _, s1 = model.encode(x2)[0], None, model.encode(x1)[2]
    expected = ((model.decode(mu1, s2) - x1) ** 2).mean() + ((model.decode(mu2, s1) - x2) ** 2).mean()
    torch.testing.assert_close(recon, expected.detach(), rtol=1e-5, atol=1e-7)


def _grads(losses, model, mode, *args):
    model.zero_grad(set_to_none=True)
    out = losses(mode, *args)
    out[0].backward()
    vals = torch.stack([t.detach() for t in out])
    return vals, {k: (p.grad.clone() if p.grad is not None else None) for k, p in model.named_parameters()}


def test_fast_path_matches_plain_path():
    """The fast step (one batched encoder/decoder call per cycle, fused Adam) computes what the plain step
    computes: the same losses and gradients from the same weights, and the same Adam update from the same
    gradients. (Whole trajectories are not compared: Adam's first steps are close to sign(grad), which turns
    float rounding of a near-zero gradient into a full lr-sized move in either direction.)"""
    g = torch.Generator().manual_seed(6)
    x1, x2, xa, xb = (torch.rand(8, 3, 60, 60, generator=g) for _ in range(4))
    eps, z = torch.randn(16, 6, generator=g), torch.randn(8, 6, generator=g)
    cfg, model, fast = _setup(fast=True, seed=5)
    plain = CycleVAE(model, cfg, fast=False)
    for mode, args in (("forward", (x1, x2, eps)), ("reverse", (xa, xb, z))):
        v_fast, g_fast = _grads(fast, model, mode, *args)
        v_plain, g_plain = _grads(plain, model, mode, *args)
        torch.testing.assert_close(v_fast, v_plain, rtol=1e-5, atol=1e-8)
        # One scale for all: a conv bias before instance norm has a zero gradient up to rounding.
        scale = max(v.abs().max() for v in g_plain.values() if v is not None)
        for k in g_fast:
            if g_plain[k] is None:
                assert g_fast[k] is None, k
                continue
            torch.testing.assert_close(g_fast[k] / scale, g_plain[k] / scale, rtol=0, atol=1e-5, msg=k)
    # The optimisers: fused Adam (fast) vs the per-parameter loop (plain), fed the same gradients.
    states = {}
    for fast_opt in (True, False):
        _, m, _ = _setup(seed=7)
        opt_fwd = CycleVAE(m, cfg, fast=fast_opt).make_optimizers()["fwd"]
        gg = torch.Generator().manual_seed(8)
        for _ in range(5):
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=gg)
            opt_fwd.step()
        states[fast_opt] = m.state_dict()
    for k, v in states[True].items():
        torch.testing.assert_close(v, states[False][k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("override,needle", [
    ("model.nope=1", "unknown config key"), ("train.lr=abc", "train.lr must be float"),
    ("train.lr=0", "train.lr must be > 0"), ("train.batch_size=1", "batch_size must be >= 2"),
    ("model.norm=layer", "model.norm"), ("model.enc_channels=[8,8]", "dec_channels"),
    ("train.precision=fp16", "precision"), ("nosection=3", "unknown config key"),
    ("train.reverse_updates=decoder", "train.reverse_updates must be one of encoder, all"),
    ("model.dec_film=1", "model.dec_film must be bool"),
    ("train.lr_decay_steps=-1", "train.lr_decay_steps must be >= 0"),
])
def test_config_errors(override, needle):
    with pytest.raises(UserError, match=needle):
        build_config("smoke", overrides=[override])


def test_config_roundtrip_and_toml(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[model]\nstyle_dim = 7\nenc_channels = [4, 4, 4, 4]\n[train]\nlr = 2e-4\n')
    cfg = build_config("quick", f, ["train.seed=3"])
    assert cfg.model.style_dim == 7 and cfg.model.enc_channels == (4, 4, 4, 4) and cfg.train.lr == 2e-4
    assert cfg.train.seed == 3
    assert Config.from_dict(cfg.to_dict()) == cfg
    f.write_text("[train]\nbogus = 1\n")
    with pytest.raises(UserError, match="bogus"):
        build_config("paper", f)


def test_reverse_cycle_leaves_batch_norm_running_stats():
    cfg = build_config("smoke", overrides=["model.norm=batch", "model.dec_norm=batch", "model.style_dim=6"])
    model = CCVAE(cfg.model)
    losses = CycleVAE(model, cfg)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    losses("reverse", torch.rand(4, 3, 60, 60), torch.rand(4, 3, 60, 60), torch.randn(4, 6))[0].backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before, strict=True))
    assert all(m.momentum == 0.1 for m in bns)  # restored
    losses("forward", torch.rand(4, 3, 60, 60), torch.rand(4, 3, 60, 60), torch.randn(8, 6))[0].backward()
    assert not all(torch.equal(m.running_mean, b) for m, b in zip(bns, before, strict=True))


@pytest.mark.parametrize("dec_norm", ["batch", "instance", "none"])
def test_film_decoder_starts_as_the_plain_one_and_learns_from_s(dec_norm):
    plain_cfg = build_config("smoke", overrides=[f"model.dec_norm={dec_norm}"]).model
    film_cfg = build_config("smoke", overrides=[f"model.dec_norm={dec_norm}", "model.dec_film=true"]).model
    torch.manual_seed(0)
    plain, film = CCVAE(plain_cfg).eval(), CCVAE(film_cfg).eval()
    # The paper's decoder keeps its state-dict keys (old checkpoints load); FiLM only adds its heads.
    assert not any(k.startswith("decoder.film") for k in plain.state_dict())
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith("decoder.film.") for k in missing)
    z, s = torch.randn(3, film_cfg.style_dim), torch.randn(3, film_cfg.class_dim)
    assert torch.equal(film.decode(z, s), plain.decode(z, s))  # zero-initialised heads: the plain decoder
    # Every head gets a gradient, and once trained s changes the image through the heads alone.
    film.train()
    film.decode(z, s).square().mean().backward()
    heads = list(film.decoder.film)
    assert len(heads) == len(film_cfg.dec_channels) - 1  # one per normalised map; none on the RGB output
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in heads)
    film.eval()
    with torch.no_grad():
        film.decoder.fc[0].weight[:, film_cfg.style_dim:] = 0  # s no longer enters the first layer
        for h in heads:
            h.weight.normal_(0, 0.5)
    y1, y2 = film.decode(z, s), film.decode(z, torch.randn_like(s))
    assert (y1 - y2).abs().max() > 1e-3


@pytest.mark.parametrize("fast", [True, False])
def test_reverse_identity_term_trains_the_decoder_only(fast):
    _, paper, l1_paper, id_off = _reverse_grads([], fast)
    losses, both, l1, id_l1 = _reverse_grads(["train.reverse_identity_coef=1.0"], fast)
    assert id_off == 0 and id_l1 > 0 and torch.equal(l1, l1_paper)
    assert losses.TERMS == ("reconstruction", "kl", "reverse_cycle", "reverse_identity")
    # The encoder is the judge: its gradients are the paper's reverse cycle's, bit for bit.
    for k, g in paper.items():
        if k.startswith("encoder."):
            assert (g is None and both[k] is None) or torch.equal(g, both[k]), k
        else:
            assert g is None, k  # the paper's reverse cycle leaves the decoder alone
    assert all(both[k] is not None and both[k].abs().sum() > 0 for k in both if k.startswith("decoder.deconvs"))
    assert {id(p) for g in losses.make_optimizers()["rev"].param_groups for p in g["params"]} == {
        id(p) for p in losses.model.parameters()}
    # With reverse_updates=all the decoder gets both terms' gradients: not the identity term's alone.
    _, all_both, _, _ = _reverse_grads(["train.reverse_identity_coef=1.0", "train.reverse_updates=all"], fast)
    assert not torch.equal(all_both["decoder.fc.0.weight"], both["decoder.fc.0.weight"])


def _joint_grads(overrides, fast=True, mode="joint"):
    cfg = build_config("smoke", overrides=["model.style_dim=6", *overrides])
    torch.manual_seed(0)
    model = CCVAE(cfg.model)
    losses = CycleVAE(model, cfg, fast=fast)
    g = torch.Generator().manual_seed(2)
    x1, x2, xa, xb = (torch.rand(4, 3, 60, 60, generator=g) for _ in range(4))
    eps, noise = torch.randn(8, 6, generator=g), torch.randn(4, 6, generator=g)
    out = losses("joint", x1, x2, eps, xa, xb, noise) if mode == "joint" else losses("forward", x1, x2, eps)
    out[0].backward()
    return losses, {k: p.grad for k, p in model.named_parameters()}, out, (xa, xb, noise)


def _grads_of(losses, *args):
    losses.zero_grad(set_to_none=True)
    out = losses(*args)
    out[0].backward()
    return {k: p.grad for k, p in losses.model.named_parameters()}, out


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("terms", [["train.reverse_identity_coef=1.0"], ["train.reverse_updates=all"]])
def test_decoder_reverse_terms_can_join_the_forward_step(fast, terms):
    sets = [*terms, "train.reverse_decoder_step=forward"]
    _, plain, (_, recon0, kl0), _ = _joint_grads([], fast, mode="forward")
    losses, joint, (loss, recon, kl, id_l1, x_gen), rev_inputs = _joint_grads(sets, fast)
    assert torch.equal(recon, recon0) and torch.equal(kl, kl0) and x_gen.shape == (8, 3, 60, 60)
    assert (id_l1 > 0) == ("train.reverse_identity_coef=1.0" in terms)
    # The encoder judges with fixed weights: its gradients are the forward cycle's, bit for bit.
    for k, g in plain.items():
        if k.startswith("encoder."):
            assert (g is None and joint[k] is None) or torch.equal(g, joint[k]), k
    assert not torch.equal(plain["decoder.fc.0.weight"], joint["decoder.fc.0.weight"])
    # The reverse cycle's own step is the paper's again: the encoder only; on the joint call's images its
    # gradients are those of the paper's reverse cycle, which draws the same images itself.
    opts = losses.make_optimizers()
    assert {id(p) for g in opts["rev"].param_groups for p in g["params"]} == {
        id(p) for p in losses.model.encoder.parameters()}
    paper, (_, l1_paper, rev_id, _) = _grads_of(losses, "reverse", *rev_inputs)
    reenc, (_, l1) = _grads_of(losses, "reencode", x_gen)
    assert rev_id == 0 and torch.equal(l1, l1_paper)
    assert all(g is None for k, g in paper.items() if k.startswith("decoder."))
    for k, g in paper.items():
        assert (g is None and reenc[k] is None) or torch.equal(g, reenc[k]), k


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("updates", ["encoder", "all"])
def test_reverse_anchor_returns_to_the_posterior_mean(fast, updates):
    sets = ["train.reverse_z=posterior", f"train.reverse_updates={updates}"]
    _, plain, l1_plain, _ = _reverse_grads(sets, fast)
    losses, grads, l1, _ = _reverse_grads([*sets, "train.reverse_anchor_coef=3.0"], fast)
    assert losses.TERMS == ("reconstruction", "kl", "reverse_cycle", "reverse_anchor")
    assert torch.equal(l1, l1_plain)  # the paper's term is untouched
    # The anchor, recomputed by hand: both generated images re-encode to xa's z mean.
    model, g = losses.model, torch.Generator().manual_seed(2)
    xa, xb, noise = torch.rand(4, 3, 60, 60, generator=g), torch.rand(4, 3, 60, 60, generator=g), torch.randn(4, 6, generator=g)
    with torch.no_grad(), frozen_norm_statistics(model):
        if fast:
            mu, logvar, s = model.encode(torch.cat([xa, xb]))
            mu_a, logvar_a = mu[:4], logvar[:4]
        else:
            mu_a, logvar_a, s_a = model.encode(xa)
            s = torch.cat([s_a, model.encode(xb)[2]])
        z = mu_a + torch.exp(0.5 * logvar_a) * noise
        x_gen = model.decode(torch.cat([z, z]), s) if fast else torch.cat([model.decode(z, s[:4]), model.decode(z, s[4:])])
        back = model.encode(x_gen)[0] if fast else torch.cat([model.encode(x_gen[:4])[0], model.encode(x_gen[4:])[0]])
        expected = (back - torch.cat([mu_a, mu_a])).abs().mean()
    _, _, _, anchor = losses("reverse", xa, xb, noise)
    assert anchor > 0 and torch.allclose(anchor, expected, rtol=1e-5, atol=1e-7)
    # It trains what the reverse cycle trains: the encoder's gradients change; the decoder's only with "all".
    assert not torch.equal(plain["encoder.z_mu.weight"], grads["encoder.z_mu.weight"])
    if updates == "all":
        assert not torch.equal(plain["decoder.fc.0.weight"], grads["decoder.fc.0.weight"])
    else:
        assert all(v is None for k, v in grads.items() if k.startswith("decoder."))


def test_reverse_anchor_needs_a_posterior_z():
    with pytest.raises(UserError, match="train.reverse_anchor_coef > 0 needs train.reverse_z=posterior"):
        build_config("smoke", overrides=["train.reverse_anchor_coef=1.0"])
    with pytest.raises(UserError, match="train coefficients must be >= 0"):
        build_config("smoke", overrides=["train.reverse_anchor_coef=-1.0", "train.reverse_z=posterior"])


def test_cross_cycle_config_errors():
    with pytest.raises(UserError, match="train.cross_cycle_coef > 0 needs train.reverse_decoder_step=reverse"):
        build_config("smoke", overrides=["train.cross_cycle_coef=1.0", "train.reverse_updates=all",
                                         "train.reverse_decoder_step=forward"])
    with pytest.raises(UserError, match="train coefficients must be >= 0"):
        build_config("smoke", overrides=["train.cross_cycle_coef=-1.0"])
    with pytest.raises(UserError, match=r"train.cross_cycle_pairs must be in \[0, train.batch_size\]"):
        build_config("smoke", overrides=["train.cross_cycle_pairs=9"])


def test_reverse_decoder_step_forward_needs_a_decoder_term():
    with pytest.raises(UserError, match="train.reverse_decoder_step=forward needs a decoder term"):
        build_config("smoke", overrides=["train.reverse_decoder_step=forward"])
    with pytest.raises(UserError, match="train.reverse_decoder_step must be one of reverse, forward"):
        build_config("smoke", overrides=["train.reverse_decoder_step=both"])


@pytest.mark.parametrize(("sets", "column"), [
    (["train.reverse_identity_coef=2.0", "train.reverse_decoder_step=reverse"], "reverse_identity"),
    (["train.reverse_identity_coef=2.0", "train.reverse_decoder_step=forward"], "reverse_identity"),
    (["train.reverse_anchor_coef=5.0", "train.reverse_z=posterior", "train.reverse_updates=all"], "reverse_anchor"),
    (["train.cross_cycle_coef=1.0"], "cross_cycle"),
    (["train.z_view=channel_permute"], "reconstruction"),
    (["train.independence_coef=20.0"], "critic_accuracy")])
def test_optional_reverse_terms_are_logged_and_resume_exactly(tmp_path, capsys, tiny_npz, sets, column):
    import csv
    import math

    from ccvae.checkpoint import load_checkpoint
    from ccvae.cli import main

    def train(out, *extra):
        code = main(["train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(out), "--quiet",
                     "--device", "cpu", "--set", "train.reverse_every=2", *[a for x in sets for a in ("--set", x)],
                     *extra])
        assert code == 0, capsys.readouterr().err

    train(tmp_path / "a", "--max-steps", "20")
    train(tmp_path / "b", "--max-steps", "10")
    code = main(["train", "--data", str(tiny_npz), "--out", str(tmp_path / "b"), "--resume", "--max-steps", "20",
                 "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert rows and all(math.isfinite(float(r[column])) and float(r[column]) > 0 for r in rows)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["extras"].keys() == b["extras"].keys()
    for k in a["extras"]:  # the critic of train.independence_coef
        assert torch.equal(a["extras"][k], b["extras"][k]), k


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_cross_cycle_trains_everything_and_matches_plain_path(norm):
    """The cross-cycle (train.cross_cycle_coef) adds to the forward cycle's loss, reaches every parameter, leaves
    batch norm's running averages as the forward cycle alone leaves them, and the fast path computes what the plain
    path computes."""
    sets = ["model.style_dim=6", f"model.norm={norm}", f"model.dec_norm={norm}", "train.cross_cycle_coef=2.0"]
    cfg = build_config("smoke", overrides=sets)
    g = torch.Generator().manual_seed(7)
    x1, x2 = torch.rand(4, 3, 60, 60, generator=g), torch.rand(4, 3, 60, 60, generator=g)
    eps = torch.randn(8, 6, generator=g)
    out = {}
    for fast in (True, False):
        torch.manual_seed(0)
        model = CCVAE(cfg.model)
        losses = CycleVAE(model, cfg, fast=fast)
        loss, recon, kl, cross = losses("cross", x1, x2, eps)
        loss.backward()
        out[fast] = (torch.stack([loss.detach(), recon, kl, cross]), {k: p.grad for k, p in model.named_parameters()},
                     {k: v.clone() for k, v in model.state_dict().items() if "running" in k})
        assert cross > 0 and torch.isfinite(cross)
        torch.testing.assert_close(loss.detach(), 2.0 * recon + 3.0 * kl * losses.kl_scale + 2.0 * cross)
        for k, grad in out[fast][1].items():
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, k
        # The forward cycle alone from the same weights: the same running averages (the cross-cycle's generated
        # images do not move them), and the same reconstruction and KL.
        torch.manual_seed(0)
        ref = CycleVAE(CCVAE(cfg.model), cfg, fast=fast)
        _, recon0, kl0 = ref("forward", x1, x2, eps)
        assert torch.equal(recon, recon0) and torch.equal(kl, kl0)
        for k, v in ref.model.state_dict().items():
            if "running" in k:
                assert torch.equal(v, out[fast][2][k]), k
    if norm == "instance":  # batch norm over a half differs from batch norm over both halves, by design
        torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-8)
        scale = max(v.abs().max() for v in out[False][1].values())
        for k, grad in out[True][1].items():
            torch.testing.assert_close(grad / scale, out[False][1][k] / scale, rtol=0, atol=1e-5, msg=k)


@pytest.mark.parametrize(("pairs", "a", "b"), [(0, [0, 1, 2], [5, 3, 4]), (2, [0, 1], [5, 3])])
def test_cross_cycle_pairs_each_image_with_another_pairs_character(pairs, a, b):
    """a is x1's row i (the first train.cross_cycle_pairs rows; 0: all), b is x2's row i - 1 (another pair's
    character): the first decode swaps their codes, the second swaps back what the encoder reads from the swapped
    images, and the targets are a then b."""
    cfg = build_config("smoke", overrides=["train.cross_cycle_coef=1.0", f"train.cross_cycle_pairs={pairs}"])
    losses = CycleVAE(CCVAE(cfg.model), cfg)
    calls = []

    def decode(z, s):  # a stand-in that draws "pose row * 10 + identity row" and records what it was given
        calls.append((z[:, 0].tolist(), s[:, 0].tolist()))
        return (10 * z[:, :1] + s[:, :1])[:, :, None, None].expand(-1, 3, 60, 60).contiguous()

    def encode(x):  # reads the two rows back: z mean = pose row, s = identity row
        v = x[:, :1, 0, 0]
        return torch.div(v, 10, rounding_mode="floor"), None, torch.remainder(v, 10)

    losses.model.decode, losses.model.encode = decode, encode
    x = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 60, 60)  # rows 0-2: x1, rows 3-5: x2 (pair i: i, i + 3)
    z = s = torch.arange(6.0)[:, None]  # codes that name their row
    assert losses._cross_cycle(x, z, s) > 0
    # u_ab = dec(z_a, s_b), u_ba = dec(z_b, s_a) with b = x2's row of the previous pair.
    assert calls[0] == (a + b, b + a)
    # Back: a's pose (read from u_ab) with a's identity (read from u_ba), and b's likewise; targets a then b.
    assert calls[1] == (a + b, a + b)


def test_cross_cycle_joins_at_its_start_step(tmp_path, capsys, tiny_npz):
    """With train.cross_cycle_start=3 the first three steps run the forward cycle alone (their cross_cycle column is
    empty, NaN, not a zero that would read as a perfect cross-cycle) and every later step runs the cross-cycle."""
    import csv
    import math

    from ccvae.cli import main

    code = main(["train", "--data", str(tiny_npz), "--preset", "smoke", "--out", str(tmp_path / "r"), "--quiet",
                 "--device", "cpu", "--max-steps", "8", "--set", "train.log_every=1",
                 "--set", "train.cross_cycle_coef=1.0", "--set", "train.cross_cycle_start=3"])
    assert code == 0, capsys.readouterr().err
    cross = [float(r["cross_cycle"]) for r in csv.DictReader(open(tmp_path / "r" / "metrics.csv"))]
    assert len(cross) == 8
    assert all(math.isnan(v) for v in cross[:3]) and all(math.isfinite(v) and v > 0 for v in cross[3:])


@pytest.mark.parametrize("updates", ["all", "decoder"])
def test_cross_cycle_updates_decoder_leaves_the_encoder_alone(updates):
    """cross_cycle_updates=decoder: the cross-cycle's gradient reaches the decoder only (not the encoder's weights,
    not the codes it starts from); "all" (DRIT) trains both."""
    cfg = build_config("smoke", overrides=["model.style_dim=6", "train.cross_cycle_coef=1.0",
                                           f"train.cross_cycle_updates={updates}"])
    torch.manual_seed(0)
    losses = CycleVAE(CCVAE(cfg.model), cfg)
    x = torch.rand(8, 3, 60, 60, generator=torch.Generator().manual_seed(3))
    mu, _, s = losses.model.encode(x)
    z = mu.detach().requires_grad_()
    losses._cross_cycle(x, z, s).backward()
    enc = [p.grad for p in losses.model.encoder.parameters()]
    dec = [p.grad for p in losses.model.decoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in dec)
    if updates == "decoder":
        assert all(g is None for g in enc) and z.grad is None
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in enc) and z.grad.abs().sum() > 0
    with pytest.raises(UserError, match="train.cross_cycle_updates must be one of all, decoder"):
        build_config("smoke", overrides=["train.cross_cycle_updates=encoder"])


def test_channel_permuted_reorders_each_images_channels():
    """View v gives image i its channels in CHANNEL_ORDERS[v] (view 0: unchanged); all six orders differ."""
    from ccvae.methods.ccvae import CHANNEL_ORDERS, channel_permuted

    assert CHANNEL_ORDERS.shape == (6, 3) and len({tuple(r) for r in CHANNEL_ORDERS.tolist()}) == 6
    assert CHANNEL_ORDERS[0].tolist() == [0, 1, 2]
    x = torch.rand(6, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    views = torch.tensor([0, 1, 2, 3, 4, 5])
    out = channel_permuted(x, views)
    for i, v in enumerate(views.tolist()):
        assert torch.equal(out[i], x[i, CHANNEL_ORDERS[v]])
    assert torch.equal(out[0], x[0]) and not torch.equal(out[5], x[5])


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_z_view_reads_z_from_the_views_and_s_from_the_images(norm):
    """train.z_view: the forward cycle's z comes from x_z, s from x1 and x2. With per-sample normalisation, views
    equal to the images give the paper's forward cycle exactly, and the fast path equals the plain path; with
    permuted views the loss's gradient reaches x_z through z only and the images through s and the target."""
    cfg = build_config("smoke", overrides=["model.style_dim=6", f"model.norm={norm}", f"model.dec_norm={norm}",
                                           "train.z_view=channel_permute"])
    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.rand(4, 3, 60, 60, generator=g), torch.rand(4, 3, 60, 60, generator=g)
    eps = torch.randn(8, 6, generator=g)
    from ccvae.methods.ccvae import channel_permuted

    torch.manual_seed(0)
    losses = CycleVAE(CCVAE(cfg.model), cfg)
    x_z = channel_permuted(torch.cat([x1, x2]), torch.tensor([1, 2, 3, 4, 5, 1, 2, 3])).requires_grad_()
    loss, recon, kl = losses("forward", x1, x2, eps, x_z)
    # z is read from the views: the KL is the views' posterior's.
    mu, logvar, _ = losses.model.encode(torch.cat([x1, x2, x_z.detach()]))
    from ccvae.losses import kl_to_standard_normal
    torch.testing.assert_close(kl, 2 * kl_to_standard_normal(mu[8:].float(), logvar[8:].float(), x1[0].numel()))
    loss.backward()
    assert x_z.grad is not None and x_z.grad.abs().sum() > 0
    if norm == "batch":
        return
    _, recon0, kl0 = losses("forward", x1, x2, eps)
    _, recon1, kl1 = losses("forward", x1, x2, eps, torch.cat([x1, x2]))
    torch.testing.assert_close((recon1, kl1), (recon0, kl0), rtol=1e-5, atol=1e-7)
    plain = CycleVAE(losses.model, cfg, fast=False)
    _, recon2, kl2 = plain("forward", x1, x2, eps, x_z.detach())
    torch.testing.assert_close((recon2, kl2), (recon, kl), rtol=1e-5, atol=1e-7)


def test_z_view_config_errors():
    with pytest.raises(UserError, match="train.z_view must be one of image, channel_permute"):
        build_config("smoke", overrides=["train.z_view=grey"])
    with pytest.raises(UserError, match="train.z_view is an option of the ccvae method"):
        build_config("smoke", overrides=["train.z_view=channel_permute"], method="mlvae")


def test_independence_term_trains_z_only_and_adds_on_the_kl_scale():
    """train.independence_coef: the forward cycle's loss plus coef * 2 * (the critic's mean logit on joint rows) /
    C*H*W. Its gradient reaches the encoder's z head through z only: not s's head, not the decoder, not the
    critic; the forward cycle itself is unchanged."""
    cfg = build_config("smoke", overrides=["model.style_dim=6", "train.independence_coef=20.0"])
    g = torch.Generator().manual_seed(7)
    x1, x2 = torch.rand(4, 3, 60, 60, generator=g), torch.rand(4, 3, 60, 60, generator=g)
    eps = torch.randn(8, 6, generator=g)
    torch.manual_seed(0)
    losses = CycleVAE(CCVAE(cfg.model), cfg)
    loss, recon, kl, dep, z, s = losses("independent", x1, x2, eps)
    _, recon0, kl0 = losses("forward", x1, x2, eps)
    assert torch.equal(recon, recon0) and torch.equal(kl, kl0)
    torch.testing.assert_close(loss.detach(), 2.0 * recon + 3.0 * kl + 20.0 * 2 * dep / (3 * 60 * 60))
    assert z.shape == (8, 6) and s.shape == (8, cfg.model.class_dim) and not z.requires_grad
    # The term alone: coef * 2 * dep / numel, through z.
    losses.zero_grad(set_to_none=True)
    from ccvae.methods.independence import dependence_estimate
    mu, logvar, s_live = losses.model.encode(torch.cat([x1, x2]))
    # The critic judges each z beside the s it is decoded with: its pair's other image's (z1 with s2, z2 with s1).
    assert torch.equal(s, torch.cat([s_live[4:], s_live[:4]]).detach())
    dependence_estimate(losses.extras["critic"], mu, s_live).backward()
    assert all(p.grad is None for p in losses.extras["critic"].parameters())
    assert all(p.grad is None for p in losses.model.decoder.parameters())
    grads = {k: p.grad for k, p in losses.model.encoder.named_parameters()}
    assert any(v is not None and v.abs().sum() > 0 for v in grads.values())
    with pytest.raises(UserError, match="train.independence_coef > 0 needs train.cross_cycle_coef=0"):
        build_config("smoke", overrides=["train.independence_coef=1.0", "train.cross_cycle_coef=1.0"])
    with pytest.raises(UserError, match="train.independence_coef is an option of the ccvae method"):
        build_config("smoke", overrides=["train.independence_coef=1.0"], method="mlvae")
    with pytest.raises(UserError, match="train coefficients must be >= 0"):
        build_config("smoke", overrides=["train.independence_coef=-1.0"])


def test_critic_tells_dependent_codes_from_independent_ones():
    """The critic's logistic loss on joint rows (z_i, s_i) against product rows (z_i, s of another row): trained on
    codes where z copies a character code carried by s, it tells them apart and its estimate of I(z; s) is large;
    on a z drawn independently of s it stays at chance and the estimate near 0. The product rows pair each row
    with another pair's s (row i of either half, [s2; s1], is pair i's character)."""
    from ccvae.methods.independence import (
        LatentCritic,
        critic_loss,
        dependence_estimate,
        other_characters,
    )

    s_rows = torch.arange(6.0)[:, None]  # rows 0-2: s2, 3-5: s1; pair i: rows i and i + 3
    rolled = other_characters(s_rows)[:, 0].long()
    assert all(int(r) % 3 != i % 3 for i, r in enumerate(rolled))
    g = torch.Generator().manual_seed(0)
    results = {}
    for planted in (True, False):
        torch.manual_seed(0)
        critic = LatentCritic(4, 8)
        opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
        for _ in range(300):
            chars = torch.randint(50, (32,), generator=g)
            codes = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))  # one s per character
            s = torch.cat([codes[chars], codes[chars]])  # (64, 8): a pair's two images share a character
            z = torch.randn(64, 4, generator=g)
            if planted:
                z[:, :2] = s[:, :2] + 0.1 * torch.randn(64, 2, generator=g)  # z carries the character
            loss, acc = critic_loss(critic, z, s)
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[planted] = (acc.item(), dependence_estimate(critic, z, s).item())
    assert results[True][0] > 0.9 and results[True][1] > 1.0, results
    assert results[False][0] < 0.7 and abs(results[False][1]) < 0.5, results
