"""Run configuration: a model section and a train section, presets, TOML files and ``--set`` overrides.

No global config: a ``Config`` is built once by the CLI and passed down.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ccvae.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("step", "cosine")
REVERSE_Z = ("prior", "posterior")
NORM_STATS = ("batch", "running")
REVERSE_UPDATES = ("encoder", "all")
DECODER_STEPS = ("reverse", "forward")
CROSS_UPDATES = ("all", "decoder")
Z_VIEWS = ("image", "channel_permute")
COMPILE_MODES = ("off", "default", "reduce-overhead")
CAPTURE_MODES = ("off", "cuda-graph")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
METHOD_NAMES = ("ccvae", "mathieu", "szabo", "mlvae")
SECTIONS = ("model", "train", "method")
NORMS = ("instance", "batch", "none")  # model.norm and model.dec_norm


@dataclass
class ModelConfig:
    """Architecture. The defaults are the reference run's network (2,799,139 parameters)."""

    image_size: int = 60
    style_dim: int = 512  # z: the unspecified factor (pose), Gaussian
    class_dim: int = 512  # s: the specified factor (identity), deterministic
    enc_channels: tuple[int, ...] = (16, 32, 64, 128)
    enc_kernel: int = 5
    enc_stride: int = 2
    enc_padding: int = 1
    dec_hidden: int = 512  # width of the decoder's first linear layer
    dec_channels: tuple[int, ...] = (256, 128, 64, 32)  # first entry: the channels of the seed map
    dec_kernel: int = 4
    norm: str = "instance"  # encoder normalisation
    dec_norm: str = "instance"  # decoder normalisation (between transposed convolutions)
    leak: float = 0.2  # negative slope of the decoder's LeakyReLU
    # s also scales and shifts every normalised decoder feature map (FiLM, Perez et al. 2018) besides entering
    # the first linear layer: appearance is mostly per-channel colour, which a modulation carries at every scale.
    dec_film: bool = False

    def __post_init__(self) -> None:
        self.enc_channels = tuple(self.enc_channels)
        self.dec_channels = tuple(self.dec_channels)

    def encoder_sizes(self) -> list[int]:
        """Spatial size before each encoder conv and after the last: [60, 29, 14, 6, 2] by default."""
        sizes = [self.image_size]
        for _ in self.enc_channels:
            sizes.append((sizes[-1] + 2 * self.enc_padding - self.enc_kernel) // self.enc_stride + 1)
        return sizes

    def validate(self) -> list[str]:
        """Problems with the config, as messages naming the field (empty when fine)."""
        errs = []
        for name in ("image_size", "style_dim", "class_dim", "dec_hidden", "enc_kernel", "enc_stride", "dec_kernel"):
            if getattr(self, name) < 1:
                errs.append(f"model.{name} must be >= 1")
        if self.enc_padding < 0:
            errs.append("model.enc_padding must be >= 0")
        if not self.enc_channels or any(c < 1 for c in self.enc_channels):
            errs.append("model.enc_channels must be a non-empty list of positive ints")
        if not self.dec_channels or any(c < 1 for c in self.dec_channels):
            errs.append("model.dec_channels must be a non-empty list of positive ints")
        if len(self.dec_channels) != len(self.enc_channels):
            errs.append("model.dec_channels must have as many entries as model.enc_channels (the decoder mirrors it)")
        for name in ("norm", "dec_norm"):
            if getattr(self, name) not in NORMS:
                errs.append(f"model.{name} must be one of {', '.join(NORMS)}")
        if not errs and min(self.encoder_sizes()) < 1:
            errs.append(f"model: the encoder shrinks a {self.image_size}px image below 1 px; use fewer or smaller-stride convs")
        return errs


@dataclass
class TrainConfig:
    """Optimisation. Defaults: the reference run (Adam 1e-4, batch 64, 150 epochs, 2/10/3)."""

    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    batch_size: int = 64
    epochs: int = 150
    max_steps: int = 0  # 0: no cap; else stop after this many steps in all
    lr_schedule: str = "step"  # step: x lr_decay_factor every lr_decay_epochs; cosine: to 0 over the run
    lr_decay_epochs: int = 80  # authors' code: step decay x0.1 after epoch 80
    lr_decay_factor: float = 0.1
    # > 0: the step schedule decays every this many steps instead of every lr_decay_epochs epochs (a decay at a set
    # point of a run whose length is fixed in steps, not epochs: e.g. a budget in CPU time).
    lr_decay_steps: int = 0
    reconstruction_coef: float = 2.0
    reverse_cycle_coef: float = 10.0
    kl_coef: float = 3.0
    kl_warmup_steps: int = 0  # KL weight rises linearly from 0 over these steps (0: none, the paper)
    # Capacity target (Burgess et al. 2018, Eq. 8): the KL term becomes kl_coef * |KL - C|, C in nats per image
    # (per latent, where a pair's images each have a z), rising linearly from 0 over kl_capacity_steps (0: at
    # once). 0: off (the paper's kl_coef * KL). A floor on what z carries instead of only a price.
    kl_capacity: float = 0.0
    kl_capacity_steps: int = 0
    reverse_z: str = "prior"  # z of the reverse cycle: prior N(0, I) (paper) or a posterior sample
    reverse_every: int = 1  # run the reverse cycle every N steps (1: every step, the paper)
    reverse_norm_stats: str = "batch"  # batch norm in the reverse cycle: batch or running statistics
    # What the reverse cycle trains: the encoder (paper) or encoder and decoder ("all"), so the decoder too learns
    # to render one z the same way under another character's s, the combination a swap asks of it.
    reverse_updates: str = "encoder"
    # Identity term of the reverse cycle (beyond the paper; 0: off): each generated image dec(z, s_x) must re-encode
    # to s_x (L1, this weight). The encoder judges and is not trained by it; the decoder is: it learns to draw the
    # character s names under a z taken from someone else, which a swap asks and the forward cycle never shows.
    reverse_identity_coef: float = 0.0
    # Anchor of the reverse cycle (beyond the paper; 0: off; needs reverse_z = "posterior"): each generated image
    # dec(z, s_x), z drawn from image a's posterior, must also re-encode to a's z mean (L1, this weight), not only to
    # the same z under both identities: the decoder must render a's pose under another character's s so that the
    # encoder reads it back, the swap's own task. Trains what the reverse cycle trains (reverse_updates). Logged as
    # reverse_anchor.
    reverse_anchor_coef: float = 0.0
    # Which Adam step applies the decoder's reverse-cycle gradients (the two options above): "reverse", the reverse
    # cycle's own (whose per-parameter scaling gives the decoder a full-size step on them whatever their weight), or
    # "forward", added to the forward cycle's loss so that their weights count against the reconstruction's.
    reverse_decoder_step: str = "reverse"
    # Cross-cycle (beyond the paper; 0: off; the cross-cycle consistency of Lee et al., DRIT, ECCV 2018): a of one
    # pair and b of another (another character), swapped twice, u_ab = dec(z_a, s_b), u_ba = dec(z_b, s_a), then
    # dec(z(u_ab), s(u_ba)) must give back a and dec(z(u_ba), s(u_ab)) b (MSE, this weight, in the forward cycle's
    # step). The forward cycle only ever decodes a z with its own character's s; this gives the decoder a pixel
    # target for the cross-character pairs a swap is made of. Logged as cross_cycle.
    cross_cycle_coef: float = 0.0
    # How many (a, b) pairs the cross-cycle takes per step (0: one per forward-cycle pair, the batch size): its three
    # extra network passes per pair cost most of a forward cycle, so fewer pairs buy more steps in a fixed time.
    cross_cycle_pairs: int = 0
    # The step from which the cross-cycle joins (0: from the start): a run can learn to reconstruct first and meet
    # the cross-cycle only for its last steps, where the swap is decided.
    cross_cycle_start: int = 0
    # What the cross-cycle trains: "all" (DRIT: encoder and decoder) or "decoder" (the codes it starts from are
    # detached and the encoder re-encodes as a fixed judge, so only the decoder learns to render cross pairs; the
    # encoder cannot meet it by carrying the character in z).
    cross_cycle_updates: str = "all"
    # What the forward cycle encodes z from (beyond the paper): "image" (the paper) or "channel_permute", a copy of
    # each image with its RGB channels in one of the six orders, drawn per image (the identity order among them),
    # while s still comes from the image itself and the target is the image. Pose does not change under a channel
    # order and a character's colours do, so any colour z passes on is noise to the decoder, which must take every
    # colour from s: the swap's cross-character pair asks exactly that. One encoder call over twice the images.
    z_view: str = "image"
    # Independence of z from s (beyond the paper; 0: off): a critic (an MLP on (z, s)) learns to tell a forward-cycle
    # z beside the s it is decoded with (its pair's other image: the same character in another pose, so that the pose
    # s also carries is not what they share) from the same z beside another character's s, and the encoder is charged
    # this weight times the critic's density-ratio estimate of I(z; s) (Kim and Mnih, FactorVAE, ICML 2018, Sec. 3),
    # on the KL's scale (nats per image / C*H*W). Every character is drawn in the same poses, so any dependence of z on
    # s is the other character that a swap carries. Logged as independence (the estimate, nats per image) and
    # critic_accuracy.
    independence_coef: float = 0.0
    # Exponential moving average of the weights (beyond the paper; 0: off): after each step avg <- d * avg +
    # (1 - d) * weights, with a warm-up (ema.py). Checkpoints keep it beside the weights, and evaluation scores it
    # (``ccvae evaluate --weights``). Training never reads it, so a run's steps are the same with it or without.
    ema_decay: float = 0.0
    seed: int = 0
    precision: str = "auto"  # auto: bf16 on CUDA and on CPUs with native bf16, else fp32
    log_every: int = 50  # steps between metrics rows (and host syncs on GPU)
    checkpoint_every: int = 500  # steps between checkpoints/last.pt
    keep_every_epochs: int = 10  # epochs between kept checkpoints/epoch_N.pt
    threads: int = 0  # CPU threads for torch; 0: all cores
    # torch.compile of the method's loss computations (forward and backward; the optimiser steps stay eager):
    # "reduce-overhead" also replays them as CUDA graphs on a GPU, where the small network is launch-bound.
    compile: str = "off"
    # "cuda-graph": the method's whole step (sampling, every loss, backward, every Adam update) captured once as
    # a CUDA graph and replayed (capture.py); CUDA only, one process. The eager path stays the default.
    capture: str = "off"
    # Layout of the networks' image tensors. "channels_last" (NHWC): oneDNN's CPU convolutions work in it, so
    # weights and activations skip a layout conversion around each convolution; but GroupNorm (instance norm) runs
    # far slower in it. "auto" picks per run what measured faster (hardware.resolve_memory_format;
    # benchmarks/README.md): channels_last for the batch-norm quick presets on a CPU in fp32 or with AMX, else
    # "contiguous" (NCHW, the layout every run trained in before this option). The maths is the same.
    memory_format: str = "auto"


@dataclass
class MethodConfig:
    """Which method trains the backbone, and the baselines' own settings.

    The cycle-consistent VAE's settings (and what every method shares: lr, batch, reconstruction and
    KL coefficients) are in ``[train]``.
    """

    name: str = "ccvae"  # ccvae | mathieu (Mathieu et al. 2016) | szabo (Szabo et al. 2018) | mlvae (ML-VAE)
    adversarial_coef: float = 1.0  # mathieu, szabo: weight of the generator's adversarial term
    self_reconstruction_coef: float = 1.0  # mathieu: x1 from its own (z1, s1), beside the swapped reconstruction
    disc_lr: float = 0.0  # mathieu, szabo: the discriminator's Adam lr (0: train.lr)
    disc_beta1: float = 0.5  # mathieu, szabo: the discriminator's Adam beta1 (0.5: Radford et al. 2016)
    # mathieu, szabo: skip the discriminator's update while its accuracy on the batch is above this
    # (the Mathieu re-implementation uses 0.8); 1: never skip. Below 1 it reads the accuracy every step.
    disc_max_accuracy: float = 1.0

    def validate(self) -> list[str]:
        checks = [
            (self.name in METHOD_NAMES, f"method.name must be one of {', '.join(METHOD_NAMES)}"),
            (min(self.adversarial_coef, self.self_reconstruction_coef) >= 0, "method coefficients must be >= 0"),
            (self.disc_lr >= 0, "method.disc_lr must be >= 0 (0: train.lr)"),
            (0 <= self.disc_beta1 < 1, "method.disc_beta1 must be in [0, 1)"),
            (0 < self.disc_max_accuracy <= 1, "method.disc_max_accuracy must be in (0, 1]"),
        ]
        return [msg for ok, msg in checks if not ok]


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["model"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> Config:
        cfg = cls()
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise UserError(f"{source}: unknown config section(s) {', '.join(sorted(unknown))}")
        for section, values in d.items():
            if not isinstance(values, dict):
                raise UserError(f"{source}: [{section}] must be a table")
            for key, value in values.items():
                set_field(cfg, f"{section}.{key}", value, source)
        return cfg

    def validate(self) -> None:
        """Raise ``UserError`` for out-of-range values, naming the field."""
        t = self.train
        nonfinite = [f"{sec}.{k} must be a finite number, got {v}" for sec in SECTIONS
                     for k, v in dataclasses.asdict(getattr(self, sec)).items() if isinstance(v, float) and not math.isfinite(v)]
        if nonfinite:  # the range checks below would let inf through
            raise UserError("invalid config: " + "; ".join(nonfinite))
        errs = list(self.model.validate()) + self.method.validate()
        checks = [
            (t.lr > 0, "train.lr must be > 0"),
            (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)"),
            (t.batch_size >= 2, "train.batch_size must be >= 2"),
            (t.epochs >= 1, "train.epochs must be >= 1"),
            (t.max_steps >= 0, "train.max_steps must be >= 0"),
            (t.lr_decay_epochs >= 1, "train.lr_decay_epochs must be >= 1"),
            (0 < t.lr_decay_factor <= 1, "train.lr_decay_factor must be in (0, 1]"),
            (t.lr_decay_steps >= 0, "train.lr_decay_steps must be >= 0"),
            (min(t.reconstruction_coef, t.reverse_cycle_coef, t.kl_coef, t.reverse_identity_coef,
                 t.reverse_anchor_coef, t.cross_cycle_coef, t.independence_coef) >= 0,
             "train coefficients must be >= 0"),
            (t.lr_schedule in LR_SCHEDULES, f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}"),
            (t.kl_warmup_steps >= 0, "train.kl_warmup_steps must be >= 0"),
            (t.kl_capacity >= 0 and t.kl_capacity_steps >= 0, "train.kl_capacity and train.kl_capacity_steps must be >= 0"),
            (t.reverse_z in REVERSE_Z, f"train.reverse_z must be one of {', '.join(REVERSE_Z)}"),
            (t.reverse_every >= 1, "train.reverse_every must be >= 1"),
            (t.reverse_norm_stats in NORM_STATS, f"train.reverse_norm_stats must be one of {', '.join(NORM_STATS)}"),
            (t.reverse_updates in REVERSE_UPDATES,
             f"train.reverse_updates must be one of {', '.join(REVERSE_UPDATES)}"),
            (t.reverse_decoder_step in DECODER_STEPS,
             f"train.reverse_decoder_step must be one of {', '.join(DECODER_STEPS)}"),
            (t.reverse_decoder_step == "reverse" or t.reverse_updates == "all" or t.reverse_identity_coef > 0,
             "train.reverse_decoder_step=forward needs a decoder term: train.reverse_updates=all or "
             "train.reverse_identity_coef > 0"),
            (t.reverse_anchor_coef == 0 or (t.reverse_z == "posterior" and t.reverse_decoder_step == "reverse"),
             "train.reverse_anchor_coef > 0 needs train.reverse_z=posterior (a prior z has no image's mean to return "
             "to) and train.reverse_decoder_step=reverse"),
            (0 <= t.cross_cycle_pairs <= t.batch_size, "train.cross_cycle_pairs must be in [0, train.batch_size]"),
            (t.cross_cycle_start >= 0, "train.cross_cycle_start must be >= 0"),
            (t.cross_cycle_updates in CROSS_UPDATES,
             f"train.cross_cycle_updates must be one of {', '.join(CROSS_UPDATES)}"),
            (t.z_view in Z_VIEWS, f"train.z_view must be one of {', '.join(Z_VIEWS)}"),
            (t.z_view == "image" or self.method.name == "ccvae",
             "train.z_view is an option of the ccvae method (method.name=ccvae)"),
            (t.cross_cycle_coef == 0 or t.reverse_decoder_step == "reverse",
             "train.cross_cycle_coef > 0 needs train.reverse_decoder_step=reverse"),
            (t.independence_coef == 0 or self.method.name == "ccvae",
             "train.independence_coef is an option of the ccvae method (method.name=ccvae)"),
            (t.independence_coef == 0 or (t.cross_cycle_coef == 0 and t.reverse_decoder_step == "reverse"),
             "train.independence_coef > 0 needs train.cross_cycle_coef=0 and train.reverse_decoder_step=reverse"),
            (0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1) (0: off)"),
            (0 <= t.seed < 2**63, "train.seed must be in [0, 2**63)"),
            (t.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}"),
            (t.log_every >= 1, "train.log_every must be >= 1"),
            (t.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
            (t.keep_every_epochs >= 1, "train.keep_every_epochs must be >= 1"),
            (t.threads >= 0, "train.threads must be >= 0"),
            (t.compile in COMPILE_MODES, f"train.compile must be one of {', '.join(COMPILE_MODES)}"),
            (t.capture in CAPTURE_MODES, f"train.capture must be one of {', '.join(CAPTURE_MODES)}"),
            (t.memory_format in MEMORY_FORMATS, f"train.memory_format must be one of {', '.join(MEMORY_FORMATS)}"),
            (t.capture == "off" or t.compile == "off",
             "train.capture and train.compile are alternatives: set one of them to off"),
        ]
        errs += [msg for ok, msg in checks if not ok]
        if errs:
            raise UserError("invalid config: " + "; ".join(errs))


def _coerce(value: Any, annotation: Any, name: str, source: str) -> Any:
    """Check ``value`` against a dataclass field type (int, float, str, tuple[int, ...])."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise UserError(f"{source}: {name} must be a list of ints, got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    raise UserError(f"{source}: {name} must be {getattr(annotation, '__name__', annotation)}, got {value!r}")


def set_field(cfg: Config, dotted: str, value: Any, source: str = "--set") -> None:
    """Set ``section.key`` on ``cfg`` with type checking; unknown keys are an error."""
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key:
        raise UserError(f"{source}: unknown config key '{dotted}' (use model.<field>, train.<field> or method.<field>)")
    obj = getattr(cfg, section)
    hints = typing.get_type_hints(type(obj))
    if key not in hints:
        raise UserError(f"{source}: unknown config key '{dotted}'; known: {', '.join(f'{section}.{k}' for k in hints)}")
    setattr(obj, key, _coerce(value, hints[key], dotted, source))


def parse_set(item: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``3``, ``1e-4``, ``"batch"``, ``[32, 64]``); bare words are strings."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


# The first quick preset's network and schedule (the study's `base` with the posterior z, `runs/quick-v5`): the
# baselines' quick presets keep it, since their step counts and pilots were sized on it (docs/baselines.md).
_QUICK_V1: dict[str, dict[str, Any]] = {
        # Sized for a 2-core CPU: 0.16-0.20 s per step on AVX2-only machines (10,000 steps in 27-33 minutes),
        # 0.06 s on a Zen 5 with AVX512-BF16 (about 11 minutes). Batch norm, batch 32 and lr 1e-3 learned fastest
        # in 2-minute pilots; the 16-variant first round of docs/quick-study.md (KL 0.3-3, posterior z and running
        # statistics in the reverse cycle, cosine schedule, wider decoder, batch 64, z 32 / s 128, no encoder
        # norm, KL warm-up) found one knob that pays: the reverse cycle's z drawn from an image's posterior
        # instead of N(0, I) (three seeds each: same swap PSNR, s 94.0 vs 93.5 %, pose from sampled z 67 vs
        # 61 %, identity still out of sampled z).
        # The encoder ends as the reference network's does (64, 128 channels: 512 features for the z and s
        # heads); with 32 channels there (128 features shared by z and s) identity from s lagged: after one
        # epoch 77.5 % identity_heldout from s instead of 88.4 %, for 6 % less time per step.
        "model": {"style_dim": 64, "class_dim": 64, "enc_channels": [16, 32, 64, 128],
                  "dec_channels": [64, 32, 32, 16], "dec_hidden": 256, "norm": "batch", "dec_norm": "batch"},
        "train": {"lr": 1e-3, "batch_size": 32, "epochs": 4, "max_steps": 10_000, "lr_decay_epochs": 3,
                  "lr_decay_factor": 0.2, "log_every": 50, "checkpoint_every": 500, "keep_every_epochs": 1,
                  "reverse_z": "posterior"},
}

# The second quick preset (up to the nineteenth study round): the study's `bigdec-kl2-revdec` (thirteenth round,
# two seeds): the decoder twice as wide (128-64-32-16, hidden 512), KL 2 instead of the authors' 3, and the reverse
# cycle training the decoder too (a swap is a cross-character (z, s) that the paper's decoder never trains on).
# Against _QUICK_V1 at the same CPU budget (7,882 steps at its 1.27x step cost, the lr decay at the same 83 % of
# the run), two seeds: the same swap (20.42 dB; 20.12-20.43), unseen identity from s 95.5-95.9 % (94.0), pose from
# sampled z 79 % (67-70), identity from sampled z still at chance. KL 1 instead of 2 lets a trace of identity into z
# (2.4x chance, twelfth round).
_QUICK_V2: dict[str, dict[str, Any]] = {
        "model": {**_QUICK_V1["model"], "dec_channels": [128, 64, 32, 16], "dec_hidden": 512},
        "train": {**_QUICK_V1["train"], "max_steps": 7_882, "lr_decay_steps": 6_557, "kl_coef": 2.0,
                  "reverse_updates": "all"},
}

# The third quick preset (up to the twenty-first study round): _QUICK_V2 with its decoder twice as wide again
# (256-128-64-32, hidden 1,024), trained for the same CPU budget: 5,056 steps at its 1.56x step cost, the lr decay at
# the same 83 % of the run (the study's `bigdec2-kl2-revdec` at the budget of 610 CPU-seconds, nineteenth round, two
# seeds). Against _QUICK_V2: swap 21.17 / 21.01 dB (20.53 / 20.30), unseen identity from s 95.4 / 95.2 %, pose from
# sampled z 80.0 / 80.9 % (78.9 / 79.4), identity from sampled z still at chance. Fewer steps of a wider decoder beat
# more of a narrower.
_QUICK_V3: dict[str, dict[str, Any]] = {
        "model": {**_QUICK_V2["model"], "dec_channels": [256, 128, 64, 32], "dec_hidden": 1024},
        "train": {**_QUICK_V2["train"], "max_steps": 5_056, "lr_decay_steps": 4_206},
}

# The fourth quick preset (up to the twenty-fifth study round): _QUICK_V3 with the reverse cycle every third step at
# three times the weight (30; the same mean pressure), which buys 8,371 steps instead of 5,056 in the same CPU budget:
# with the decoder's terms the reverse cycle was 50-60 % of a step (the study's `bigdec2-kl2-revdec-rev3-rc30`,
# twenty-first round, three seeds; the lr decay at the same 83 % of the run). Against _QUICK_V3: see
# docs/quick-study.md, twenty-first round.
_QUICK_V4: dict[str, dict[str, Any]] = {
        "model": dict(_QUICK_V3["model"]),
        "train": {**_QUICK_V3["train"], "max_steps": 8_371, "lr_decay_steps": 6_964, "reverse_every": 3,
                  "reverse_cycle_coef": 30.0},
}

# The quick preset: _QUICK_V4 with a critic of I(z; s) charged to the encoder at weight 20 (train.independence_coef;
# the study's `bigdec2-kl2-revdec-rev3-rc30-ind20`, twenty-sixth round, three seeds). Its step costs x 1.063, so the
# same CPU budget buys 7,874 steps, the lr decay at the same 83 % of the run. Against _QUICK_V4: the cross-character
# gap of the swap shrinks from 4.2-4.9 to 3.1-3.4 dB and the swap passes 22 dB (docs/quick-study.md, twenty-sixth round).
_QUICK: dict[str, dict[str, Any]] = {
        "model": dict(_QUICK_V4["model"]),
        "train": {**_QUICK_V4["train"], "max_steps": 7_874, "lr_decay_steps": 6_550, "independence_coef": 20.0},
}


# The third quick preset trained longer: 12,000 steps (the study's `bigdec2-kl2-revdec` at 1,448 CPU-seconds of the
# study's scale against 610, sixteenth round, two seeds): about 25 minutes of training on a 2-core Zen 5 or an Intel
# Xeon with AMX, 48 on a Zen 4, so it is not a quick preset itself; the lr decay at the same 83 % of the run.
_QUICK_SHARP: dict[str, dict[str, Any]] = {
        "model": dict(_QUICK_V3["model"]),
        "train": {**_QUICK_V3["train"], "epochs": 5, "max_steps": 12_000, "lr_decay_steps": 9_983},
}


def _quick_baseline(name: str, steps: int, decay_epochs: int, method: dict | None = None) -> dict[str, dict[str, Any]]:
    """The quick preset for a baseline: the first quick preset's network and optimiser (``_QUICK_V1``); ``steps``
    sized to that preset's training time (the current one's too: 610 s at the study's step costs) at the method's
    step time; the lr decay kept at 83-89 % of the run, as in the quick presets (the first: after 3 epochs of
    2,781 steps, step 8,343 of 10,000)."""
    train = {k: v for k, v in _QUICK_V1["train"].items() if k != "reverse_z"}  # reverse_z: the ccvae's own
    train.update(max_steps=steps, epochs=decay_epochs + 1, lr_decay_epochs=decay_epochs)
    return {"model": dict(_QUICK_V1["model"]), "train": train, "method": {"name": name, **(method or {})}}


# Presets. ``quick``: about 35 minutes of training and evaluation on a 2-core CPU; ``smoke``: tests.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The reference re-implementation's run: z 512 / s 512 (its published hyperparameters).
    "paper": {},
    # The two Sprites rows of the paper's Table 1 (z 512 / s 64 and z 1024 / s 512), same network and schedule.
    "paper-z512-s64": {"model": {"style_dim": 512, "class_dim": 64}},
    "paper-z1024-s512": {"model": {"style_dim": 1024, "class_dim": 512}},
    "quick": _QUICK,
    # The first quick preset (up to the thirteenth study round; README's `runs/quick-v5`), the second (up to the
    # nineteenth), the third (up to the twenty-first) and the fourth (up to the twenty-fifth), kept so that their
    # results and the study's earlier rows rerun as they ran.
    "quick-v1": _QUICK_V1,
    "quick-v2": _QUICK_V2,
    "quick-v3": _QUICK_V3,
    "quick-v4": _QUICK_V4,
    # Sharper swaps for about 2.5 times the quick preset's training (docs/quick-study.md, sixteenth round).
    "quick-sharp": _QUICK_SHARP,
    # The baselines at the quick budget: the first quick preset's backbone and optimiser, each method's own
    # terms, and as many steps as the quick preset's training time buys at the method's own step time
    # (docs/baselines.md: the step times and the pilots behind each setting).
    "quick-mathieu": _quick_baseline("mathieu", steps=6_250, decay_epochs=2, method={"adversarial_coef": 0.001}),
    "quick-szabo": _quick_baseline("szabo", steps=10_000, decay_epochs=3,
                                   method={"adversarial_coef": 0.01, "disc_max_accuracy": 0.8}),
    "quick-mlvae": _quick_baseline("mlvae", steps=22_000, decay_epochs=7),
    "smoke": {
        "model": {"style_dim": 8, "class_dim": 8, "enc_channels": [8, 8, 8, 8], "dec_channels": [8, 8, 8, 8],
                  "dec_hidden": 32},
        "train": {"batch_size": 8, "epochs": 2, "max_steps": 20, "log_every": 5, "checkpoint_every": 10,
                  "keep_every_epochs": 1, "lr": 1e-3},
    },
}


def build_config(preset: str = "paper", file: str | Path | None = None, overrides: list[str] | None = None,
                 method: str | None = None) -> Config:
    """Preset, then a TOML file, then ``--set`` overrides; validated.

    ``method`` sets ``method.name``; when the preset has a variant tuned for it (``quick`` ->
    ``quick-mathieu``), that variant is the starting point instead.
    """
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: choose from {', '.join(PRESETS)}")
    if method is not None:
        if method not in METHOD_NAMES:
            raise UserError(f"--method {method!r}: choose from {', '.join(METHOD_NAMES)}")
        preset = f"{preset}-{method}" if f"{preset}-{method}" in PRESETS else preset
    cfg = Config.from_dict(PRESETS[preset], f"preset {preset}")
    if method is not None:
        cfg.method.name = method
    if file is not None:
        path = Path(file)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: invalid TOML ({e})") from None
        for section, values in data.items():
            if section not in SECTIONS or not isinstance(values, dict):
                raise UserError(f"{path}: unknown config section [{section}]")
            for k, v in values.items():
                set_field(cfg, f"{section}.{k}", v, str(path))
    for item in overrides or []:
        key, value = parse_set(item)
        set_field(cfg, key, value, f"--set {item}")
    cfg.validate()
    return cfg
