"""The cycle-consistent VAE (Jha, Anand, Singh, Veeravasarapu; ECCV 2018, arXiv 1804.10469).

Forward cycle (Sec. 3.1, Eq. 2): swap s within a same-character pair, reconstruct, KL on z; it
updates encoder and decoder. Reverse cycle (Sec. 3.2, Eq. 3): one z decoded with the s of two
random images must re-encode to the same z; it updates the encoder only (``train.reverse_updates =
"all"``: the decoder too, an option beyond the paper). ``train.reverse_identity_coef`` (beyond the paper) adds
that each generated image re-encodes to the s it was drawn with, a term that trains the decoder only;
``train.reverse_anchor_coef`` (beyond the paper) that it re-encodes to the z mean its posterior z was drawn
around (the latent reconstruction of Huang et al., MUNIT, ECCV 2018, on a posterior z). With
``train.reverse_decoder_step = "forward"`` the decoder's share of those terms joins the forward cycle's loss
(one call, "joint", one Adam step) instead of the reverse cycle's own step. ``train.cross_cycle_coef`` (beyond the
paper) adds DRIT's cross-cycle (Lee et al., ECCV 2018) to the forward cycle's step: two characters swapped twice
must come back, a pixel target for the cross-character (z, s) pairs that a swap decodes. With ``train.z_view =
"channel_permute"`` (beyond the paper) the forward cycle reads z from a copy of each image with its colour channels
reordered, so that the decoder must take a character's colours from s alone. ``train.independence_coef`` (beyond the
paper) charges the encoder a critic's estimate of I(z; s) in the forward cycle's step (FactorVAE's density-ratio
trick; ``independence.py``), the critic learning in a step of its own.

``fast=True`` batches the two halves of each cycle into one encoder and one decoder call
(identical maths: normalisation is per sample, or batch norm over the same concatenated batch);
``fast=False`` is the plain form, kept for the equivalence test and the baseline benchmark.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ccvae.config import Config
from ccvae.hardware import autocast
from ccvae.losses import kl_to_standard_normal, reconstruction_mse, reverse_cycle_l1
from ccvae.methods.base import Method, StepContext, with_fixed_weights
from ccvae.methods.independence import LatentCritic, critic_loss, dependence_estimate
from ccvae.model import CCVAE, reparameterize

# The six orders of the RGB channels; row 0 is the identity.
CHANNEL_ORDERS = torch.tensor(list(itertools.permutations(range(3))))  # (6, 3)


def channel_permuted(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """x (N, 3, H, W) with image i's channels in the order ``CHANNEL_ORDERS[views[i]]``; views (N,) in [0, 6)."""
    order = CHANNEL_ORDERS.to(x.device)[views]  # (N, 3)
    return x.gather(1, order[:, :, None, None].expand_as(x))


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module, use_running: bool = False) -> Iterator[None]:
    """Batch norm leaves its running averages alone; with ``use_running`` it also normalises with them.

    The reverse cycle feeds the decoder z ~ N(0, I) and the encoder generated images; letting those
    move the running averages makes eval mode (which uses them) see statistics of data it is never
    given, which cost 3 dB of reconstruction PSNR in a measured quick run. ``use_running`` makes the
    reverse cycle see the network users get (eval-mode batch norm): with batch statistics the encoder
    learned an invariance that held only under them (L1 1.8e-5 in train mode, 1.05e-2 in eval mode).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
        if use_running:
            m.eval()
    try:
        yield
    finally:
        for m, (mom, training) in zip(bns, saved, strict=True):
            m.momentum = mom
            m.train(training)


class CycleVAE(Method):
    """``loss_forward(x1, x2, eps)`` -> (loss, recon, kl); ``loss_cross(x1, x2, eps)`` -> (loss, recon, kl, cross)
    (forward cycle plus cross-cycle, with ``cross_cycle_coef``); ``loss_reverse(xa, xb, noise)`` -> (loss, l1, id_l1,
    anchor_l1).
    With ``independence_coef``: ``loss_independent(x1, x2, eps)`` -> (loss, recon, kl, dependence, z, s) in place of
    ``loss_forward``, then ``loss_critic(z, s)`` -> (loss, accuracy).
    With ``reverse_decoder_step = "forward"``: ``loss_joint`` (forward cycle + the decoder's reverse terms) then
    ``loss_reencode`` (the encoder's reverse cycle on the images ``loss_joint`` generated)."""

    name = "ccvae"
    paper = "Jha et al., ECCV 2018 (arXiv 1804.10469)"
    TERMS = ("reconstruction", "kl", "reverse_cycle")
    # The reverse-cycle L1 of the last reverse batch with the model in eval mode (the network users get);
    # with batch norm it can be far above the train-mode value when the encoder leans on batch statistics.
    DIAGNOSTICS = ("reverse_cycle_eval",)
    MODES = ("forward", "cross", "reverse", "joint", "reencode", "independent", "critic")

    def __init__(self, model: CCVAE, cfg: Config, fast: bool = True) -> None:
        super().__init__(model, cfg, fast)
        self._last_reverse: tuple[torch.Tensor, ...] | None = None
        # Optional terms get their own metrics.csv column only when they are on.
        self.TERMS = CycleVAE.TERMS + (("reverse_identity",) if cfg.train.reverse_identity_coef > 0 else ()) + (
            ("reverse_anchor",) if cfg.train.reverse_anchor_coef > 0 else ()) + (
            ("cross_cycle",) if cfg.train.cross_cycle_coef > 0 else ()) + (
            ("independence", "critic_accuracy") if self._independent() else ())
        if self._independent():
            self.extras["critic"] = LatentCritic(cfg.model.style_dim, cfg.model.class_dim)

    def _independent(self) -> bool:
        """The encoder is charged the critic's estimate of I(z; s) (``train.independence_coef``)."""
        return self.cfg.train.independence_coef > 0

    def _decoder_learns_reverse(self) -> bool:
        t = self.cfg.train
        return t.reverse_updates == "all" or t.reverse_identity_coef > 0

    def _trains_decoder_in_reverse(self) -> bool:
        """The reverse cycle's own step trains the decoder (else only the encoder)."""
        return self._decoder_learns_reverse() and self.cfg.train.reverse_decoder_step == "reverse"

    def _joint(self) -> bool:
        """The decoder's reverse-cycle terms join the forward cycle's step."""
        return self._decoder_learns_reverse() and self.cfg.train.reverse_decoder_step == "forward"

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Adam over encoder+decoder (forward cycle) and Adam over the encoder only (reverse cycle; the whole
        model when the reverse cycle's step trains the decoder: ``reverse_updates = "all"`` or
        ``reverse_identity_coef``, with ``reverse_decoder_step = "reverse"``)."""
        rev = self.model if self._trains_decoder_in_reverse() else self.model.encoder
        critic = {"critic": self.adam(self.extras["critic"].parameters())} if self._independent() else {}
        return {"fwd": self.adam(self.model.parameters()), "rev": self.adam(rev.parameters()), **critic}

    def step_variant(self, step: int) -> object:
        """With or without the reverse cycle; with a cross-cycle that joins late, also before or after it joins."""
        reverse = step % self.cfg.train.reverse_every == 0
        return (reverse, self._cross(step)) if self.cfg.train.cross_cycle_start > 0 else reverse

    def _cross(self, step: int) -> bool:
        """Whether the cross-cycle joins the forward cycle at ``step``."""
        t = self.cfg.train
        return t.cross_cycle_coef > 0 and step >= t.cross_cycle_start

    def train_step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        t, d = self.cfg.train, self.cfg.model
        opt_fwd, opt_rev = ctx.optimizers["fwd"], ctx.optimizers["rev"]
        pairs = ctx.data.pairs_from_flat(ctx.flat, ctx.g_data)
        b = pairs.x1.shape[0]
        eps = torch.randn(2 * b, d.style_dim, generator=ctx.g_noise, device=ctx.device)
        reverse = ctx.step % t.reverse_every == 0
        if reverse:  # drawn before the forward step (which draws nothing): each generator's sequence is unchanged
            xa = ctx.data.sample(b, ctx.g_data).x
            xb = ctx.data.sample(b, ctx.g_data).x
            noise = torch.randn(b, d.style_dim, generator=ctx.g_noise, device=ctx.device)
        # What z is read from (train.z_view): the images (the paper; nothing drawn, no argument) or their
        # channel-permuted copies, one more tensor argument of the call (never a None, which DDP would have to pass).
        z_view: tuple[torch.Tensor, ...] = ()
        if t.z_view == "channel_permute":
            views = torch.randint(len(CHANNEL_ORDERS), (2 * b,), generator=ctx.g_noise, device=ctx.device)
            z_view = (channel_permuted(torch.cat([pairs.x1, pairs.x2]), views),)  # (2B, 3, 60, 60)
        opt_fwd.zero_grad(set_to_none=True)
        crossed = self._cross(ctx.step)
        with autocast(ctx.device, ctx.precision):
            if reverse and self._joint():
                loss, recon, kl, id_l1, x_gen = ctx.call("joint", pairs.x1, pairs.x2, eps, xa, xb, noise, *z_view)
            elif crossed:
                loss, recon, kl, cross = ctx.call("cross", pairs.x1, pairs.x2, eps, *z_view)
            elif self._independent():
                loss, recon, kl, dependence, z, s = ctx.call("independent", pairs.x1, pairs.x2, eps, *z_view)
            else:
                loss, recon, kl = ctx.call("forward", pairs.x1, pairs.x2, eps, *z_view)
        loss.backward()
        opt_fwd.step()

        zero = torch.zeros((), device=ctx.device)
        by_term = {"reconstruction": recon, "kl": kl, **({"cross_cycle": cross} if crossed else {})}
        if self._independent():  # the critic learns on the codes the encoder was just charged on
            opt_critic = ctx.optimizers["critic"]
            opt_critic.zero_grad(set_to_none=True)
            with autocast(ctx.device, ctx.precision):
                c_loss, c_acc = ctx.call("critic", z, s)
            c_loss.backward()
            opt_critic.step()
            by_term.update(independence=dependence, critic_accuracy=c_acc)
        if reverse:
            anchor_l1 = zero
            opt_rev.zero_grad(set_to_none=True)
            with autocast(ctx.device, ctx.precision):
                if self._joint():  # the images the joint call generated: one decoder pass fewer
                    rev, l1 = ctx.call("reencode", x_gen)
                else:
                    rev, l1, id_l1, anchor_l1 = ctx.call("reverse", xa, xb, noise)
            rev.backward()
            opt_rev.step()
            self._last_reverse = (xa, xb, noise, ctx.device, ctx.precision)
            by_term.update(reverse_cycle=l1, reverse_identity=id_l1, reverse_anchor=anchor_l1)
        # A term this step did not compute (the reverse cycle's off its steps, the cross-cycle's before its start)
        # has ran 0: left out of the logged mean.
        ran = torch.stack([zero + float(k in by_term) for k in self.TERMS])
        return torch.stack([by_term.get(k, zero).float() for k in self.TERMS]), ran

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """The reverse-cycle L1 of the last reverse batch in eval mode (NaN before any)."""
        if self._last_reverse is None:
            return {"reverse_cycle_eval": float("nan")}
        xa, xb, noise, device, precision = self._last_reverse
        self.model.eval()
        try:
            with autocast(device, precision):
                l1 = self.loss_reverse(xa, xb, noise)[1]
        finally:
            self.model.train()
        return {"reverse_cycle_eval": l1.item()}

    def loss_forward(self, x1: torch.Tensor, x2: torch.Tensor, eps: torch.Tensor, x_z: torch.Tensor | None = None):
        """Paper Sec. 3.1, Fig. 2(a): swap s within a same-identity pair and reconstruct.

        x1, x2: (B, 3, 60, 60), the same characters; eps: (2B, style_dim) ~ N(0, I); x_z: (2B, 3, 60, 60), what z
        is read from in place of [x1; x2] (``train.z_view``), or None. Returns (loss, recon, kl).
        """
        return self._forward_cycle(x1, x2, eps, x_z)[:3]

    def loss_cross(self, x1: torch.Tensor, x2: torch.Tensor, eps: torch.Tensor, x_z: torch.Tensor | None = None):
        """The forward cycle plus the cross-cycle (``train.cross_cycle_coef``), in one loss and one Adam step.

        Returns (loss, recon, kl, cross): cross is the cross-cycle's MSE, on the forward cycle's scale."""
        loss, recon, kl, z, s = self._forward_cycle(x1, x2, eps, x_z)
        cross = self._cross_cycle(torch.cat([x1, x2]), z, s)
        return loss + self.cfg.train.cross_cycle_coef * cross, recon, kl, cross.detach()

    def loss_independent(self, x1: torch.Tensor, x2: torch.Tensor, eps: torch.Tensor, x_z: torch.Tensor | None = None):
        """The forward cycle plus ``independence_coef`` times the critic's estimate of I(z; s), on the KL's scale
        (nats per image, two z per pair, / C*H*W), in one loss and one Adam step.

        Returns (loss, recon, kl, dependence in nats per image, and for the critic's step, detached: z (2B,
        style_dim) and the s each z is decoded with (2B, class_dim), its pair's other image's: [s2; s1])."""
        loss, recon, kl, z, s = self._forward_cycle(x1, x2, eps, x_z)
        B = x1.shape[0]
        s_decoded = torch.cat([s[B:], s[:B]])  # z1 with s2, z2 with s1: one character, another pose
        dependence = dependence_estimate(self.extras["critic"], z, s_decoded)
        loss = loss + self.cfg.train.independence_coef * 2 * dependence / x1[0].numel()
        return loss, recon, kl, dependence.detach(), z.detach(), s_decoded.detach()

    def loss_critic(self, z: torch.Tensor, s: torch.Tensor):
        """The critic's logistic loss on joint and product rows of the forward cycle's codes (``independence.py``).
        Returns (loss, accuracy)."""
        return critic_loss(self.extras["critic"], z, s)

    def _forward_cycle(self, x1: torch.Tensor, x2: torch.Tensor, eps: torch.Tensor, x_z: torch.Tensor | None = None):
        """The forward cycle's (loss, recon, kl) and its codes: z (2B, style_dim) sampled, s (2B, class_dim); x1's rows,
        then x2's. z is read from ``x_z`` when given (its rows: x1's views, then x2's), s always from x1, x2."""
        m, B = self.model, x1.shape[0]
        numel = x1[0].numel()
        if self.fast:
            if x_z is None:
                mu, logvar, s = m.encode(torch.cat([x1, x2]))  # (2B, d) each
            else:  # one encoder call (batch norm over all 4B): s from the images, z from their views
                mu, logvar, s = m.encode(torch.cat([x1, x2, x_z]))  # (4B, d) each
                mu, logvar, s = mu[2 * B:], logvar[2 * B:], s[:2 * B]
            z = reparameterize(mu, logvar, eps)
            s1, s2 = s[:B], s[B:]
            x_hat = m.decode(z, torch.cat([s2, s1]))  # x1' = dec(z1, s2), x2' = dec(z2, s1): (2B, 3, 60, 60)
            # mean over the concatenation = (MSE(x1', x1) + MSE(x2', x2)) / 2
            recon = 2 * reconstruction_mse(x_hat, torch.cat([x1, x2]))
            # KL(z1) + KL(z2), each summed and divided by B * C*H*W (authors' code)
            kl = kl_to_standard_normal(mu.float(), logvar.float(), numel) * 2
        else:
            mu1, logvar1, s1 = m.encode(x1)
            mu2, logvar2, s2 = m.encode(x2)
            if x_z is not None:
                mu1, logvar1, _ = m.encode(x_z[:B])
                mu2, logvar2, _ = m.encode(x_z[B:])
            z1 = reparameterize(mu1, logvar1, eps[:B])
            z2 = reparameterize(mu2, logvar2, eps[B:])
            recon = reconstruction_mse(m.decode(z1, s2), x1) + reconstruction_mse(m.decode(z2, s1), x2)
            kl = kl_to_standard_normal(mu1.float(), logvar1.float(), numel) + kl_to_standard_normal(
                mu2.float(), logvar2.float(), numel)
            z, s = torch.cat([z1, z2]), torch.cat([s1, s2])
        # Paper Eq. (2) with the reference coefficients: 2 * reconstruction + 3 * KL.
        t = self.cfg.train
        loss = t.reconstruction_coef * recon + self.kl_term(kl, numel, latents=2)
        return loss, recon.detach(), kl.detach(), z, s

    def _cross_cycle(self, x: torch.Tensor, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Cross-cycle consistency (Lee et al., DRIT, ECCV 2018, Eq. 4) on the forward cycle's codes.

        x (2B, 3, 60, 60) = [x1; x2], z and s their codes. a: x1's first k rows (``train.cross_cycle_pairs``; 0: all
        B); b: x2's rows shifted by one, so that b is another pair's character (a pair's two images share one). Swap,
        re-encode, swap back: u = [dec(z_a, s_b); dec(z_b, s_a)], then
        [dec(z_mean(u_ab), s(u_ba)); dec(z_mean(u_ba), s(u_ab))] ~ [a; b]. Batch norm leaves its running averages
        alone (generated images, as in the reverse cycle). With ``cross_cycle_updates = "decoder"`` only the decoder
        learns from it. Returns the sum of the two MSEs, as ``recon`` sums the forward cycle's two."""
        B = x.shape[0] // 2
        k = self.cfg.train.cross_cycle_pairs or B
        a_rows = torch.arange(k, device=x.device)  # (k,)
        b_rows = B + (a_rows - 1) % B  # (k,) x2's row of the previous pair
        target = torch.cat([x[a_rows], x[b_rows]])  # (2k, 3, 60, 60): a then b
        m = self.model
        encoder: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = m.encode
        if self.cfg.train.cross_cycle_updates == "decoder":  # the encoder neither starts nor judges with a gradient
            z, s = z.detach(), s.detach()
            encoder = self._fixed_encoder()
        z_a, s_a, z_b, s_b = z[a_rows], s[a_rows], z[b_rows], s[b_rows]
        with frozen_norm_statistics(m):
            u = self._decode_halves(torch.cat([z_a, z_b]), torch.cat([s_b, s_a]))  # (2k, 3, 60, 60): u_ab then u_ba
            mu_u, s_u = self._encode_halves(encoder, u)  # (2k, style_dim), (2k, class_dim)
            back = self._decode_halves(mu_u, torch.cat([s_u[k:], s_u[:k]]))  # a's pose with a's s, b's with b's
        return 2 * reconstruction_mse(back, target)

    def _decode_halves(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """z, s (2k, d) -> (2k, 3, 60, 60): one decoder call (``fast``) or one per half, as the plain form runs it."""
        if self.fast:
            return self.model.decode(z, s)
        B = z.shape[0] // 2
        return torch.cat([self.model.decode(z[:B], s[:B]), self.model.decode(z[B:], s[B:])])

    def _encode_halves(self, encoder: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
                       x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z means and s of x (2k, 3, 60, 60): one encoder call (``fast``) or one per half."""
        if self.fast:
            mu, _, s = encoder(x)
            return mu, s
        B = x.shape[0] // 2
        (mu1, _, s1), (mu2, _, s2) = encoder(x[:B]), encoder(x[B:])
        return torch.cat([mu1, mu2]), torch.cat([s1, s2])

    def loss_joint(self, x1: torch.Tensor, x2: torch.Tensor, eps: torch.Tensor, xa: torch.Tensor, xb: torch.Tensor,
                   noise: torch.Tensor, x_z: torch.Tensor | None = None):
        """The forward cycle's loss plus the decoder's reverse-cycle terms (``reverse_decoder_step = "forward"``).

        One call, so that DDP sees a single forward per backward; the decoder terms go through an encoder whose
        weights are held fixed, so the encoder's gradients are the forward cycle's alone (the paper's reverse
        cycle still trains it in its own step, on the images generated here: ``loss_reencode``).
        Returns (loss, recon, kl, id_l1, generated images detached: (2B, 3, 60, 60)).
        """
        loss, recon, kl = self.loss_forward(x1, x2, eps, x_z)
        with self._reverse_norms():
            dec_loss, _, id_l1, _, x_gen = self._reverse_cycle(self.model, xa.shape[0], xa, xb, noise, part="decoder")
        return loss + dec_loss, recon, kl, id_l1, x_gen.detach()

    def loss_reencode(self, x_gen: torch.Tensor):
        """The paper's reverse cycle (encoder side) on images already generated: x_gen (2B, 3, 60, 60) holds
        dec(z, s_a) then dec(z, s_b). With ``reverse_decoder_step = "forward"`` they come from the joint call, made
        by the decoder and encoder as they were before that step's update. Returns (loss, l1)."""
        B = x_gen.shape[0] // 2
        with self._reverse_norms():
            mu = self._z_means(self.model.encoder, x_gen)
        l1 = reverse_cycle_l1(mu[:B], mu[B:])
        return self.cfg.train.reverse_cycle_coef * l1, l1.detach()

    def loss_reverse(self, xa: torch.Tensor, xb: torch.Tensor, noise: torch.Tensor):
        """Paper Sec. 3.2, Fig. 2(b): one z decoded with two identities must re-encode to the same z.

        xa, xb: (B, 3, 60, 60), independent images; noise: (B, style_dim) ~ N(0, I). z is ``noise``
        itself (the paper: z ~ p(z)) or, with ``reverse_z = "posterior"``, a sample of xa's own
        posterior (a z the decoder meets in the forward cycle). Gradients reach the encoder only
        through the re-encoding: s and z are detached, and the decoder runs without a graph unless
        ``reverse_updates = "all"`` trains it too. With ``reverse_identity_coef`` the decoder also gets
        the identity term's gradient, through an encoder whose weights are held fixed for that term.
        """
        m, B = self.model, xa.shape[0]
        part = "both" if self._trains_decoder_in_reverse() else "encoder"
        with self._reverse_norms():
            return self._reverse_cycle(m, B, xa, xb, noise, part)[:4]

    def _reverse_norms(self) -> contextlib.AbstractContextManager[None]:
        """Batch norm as the reverse cycle uses it: running averages left alone (and used, with "running")."""
        return frozen_norm_statistics(self.model, use_running=self.cfg.train.reverse_norm_stats == "running")

    def _fixed_encoder(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
        """The encoder as a fixed judge: its weights detached, so only what feeds it (the decoder) learns from it."""
        return with_fixed_weights(self.model.encoder)

    def _z_means(self, encoder: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor) -> torch.Tensor:
        """z means of x (2B, 3, 60, 60): one encoder call (``fast``) or one per half, as the plain form runs it."""
        return self._encode_halves(encoder, x)[0]

    def _reverse_cycle(self, m: CCVAE, B: int, xa: torch.Tensor, xb: torch.Tensor, noise: torch.Tensor, part: str):
        """part: "encoder" (the paper: the decoder runs without a graph), "decoder" (the decoder's terms only,
        through a fixed encoder) or "both" (the decoder's terms in the same loss as the encoder's)."""
        posterior = self.cfg.train.reverse_z == "posterior"
        with torch.no_grad():
            if self.fast:
                mu, logvar, s = m.encode(torch.cat([xa, xb]))  # (2B, class_dim), detached
                mu_a = mu[:B]  # (B, style_dim): what a posterior z was drawn around
                z = reparameterize(mu_a, logvar[:B], noise) if posterior else noise
            else:
                mu_a, logvar_a, s_a = m.encode(xa)
                s_b = m.encode(xb)[2]
                z = reparameterize(mu_a, logvar_a, noise) if posterior else noise
        t = self.cfg.train
        with torch.set_grad_enabled(part != "encoder" and torch.is_grad_enabled()):
            if self.fast:
                x_gen = m.decode(torch.cat([z, z]), s)  # (2B, 3, 60, 60)
            else:
                s = torch.cat([s_a, s_b])  # (2B, class_dim)
                x_gen = torch.cat([m.decode(z, s_a), m.decode(z, s_b)])
        judge = self._fixed_encoder() if part != "encoder" else m.encoder
        judged = judge(x_gen) if part == "decoder" and self.fast else None  # one pass for both decoder terms
        if part == "decoder":  # the z term through the fixed encoder, when the decoder is to learn it
            mu = judged[0] if judged is not None else self._z_means(judge, x_gen)
            weight = t.reverse_cycle_coef if t.reverse_updates == "all" else 0.0
        else:
            x_z = x_gen if part == "both" and t.reverse_updates == "all" else x_gen.detach()  # what the z term trains
            mu = self._z_means(m.encoder, x_z)
            weight = t.reverse_cycle_coef
        # Paper Eq. (3): L1 between the two re-encoded z means, weighted 10 (reference run).
        l1 = reverse_cycle_l1(mu[:B], mu[B:])
        loss = weight * l1
        id_l1 = anchor_l1 = torch.zeros((), device=l1.device)
        if t.reverse_anchor_coef > 0:  # never in the joint call (part="decoder"): the config rules it out
            anchor_l1 = reverse_cycle_l1(mu, torch.cat([mu_a, mu_a]))  # both images back to a's z mean
            loss = loss + t.reverse_anchor_coef * anchor_l1
        if t.reverse_identity_coef > 0 and part != "encoder":
            s_hat = (judged if judged is not None else judge(x_gen))[2]
            id_l1 = F.l1_loss(s_hat.float(), s.float())  # s_hat: (2B, class_dim)
            loss = loss + t.reverse_identity_coef * id_l1
        return loss, l1.detach(), id_l1.detach(), anchor_l1.detach(), x_gen
