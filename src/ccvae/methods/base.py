"""The interface every training method implements, and what the trainer hands it each step.

A method is an ``nn.Module`` that holds the shared backbone (``CCVAE``: encoder -> (z_mu, z_logvar, s),
decoder (z, s) -> x) plus any modules of its own (``extras``: discriminators, extra heads). The
trainer owns the loop, the run folder, checkpoints, resume, NaN checks and DDP; a method owns its
loss terms, its optimisers and the order of its random draws. Every loss computation goes through
``forward(mode, ...)`` so that DistributedDataParallel, which wraps the method, sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from ccvae.config import Config
from ccvae.data.dataset import SpritesDataset
from ccvae.model import CCVAE


@dataclass
class StepContext:
    """What one training step may use. ``call`` is the method itself, or its DDP wrapper."""

    data: SpritesDataset
    flat: torch.Tensor  # (B_local,) this rank's slice of the epoch order: row * n_poses + pose
    g_data: torch.Generator | None  # which images (checkpointed); None: the device's default generator
    g_noise: torch.Generator | None  # reparameterisation and prior noise (checkpointed); None: as g_data
    device: torch.device
    precision: str  # fp32 | bf16, for autocast
    step: int
    call: Callable[..., tuple[torch.Tensor, ...]]
    optimizers: dict[str, torch.optim.Optimizer]


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``TERMS``, ``MODES`` and implement the abstract members."""

    name: ClassVar[str]
    paper: ClassVar[str]  # citation shown in logs and the comparison page
    TERMS: ClassVar[tuple[str, ...]]  # per-step values logged to metrics.csv; each must stay finite
    DIAGNOSTICS: ClassVar[tuple[str, ...]] = ()  # values measured at each log row (``diagnostics()``)
    MODES: ClassVar[tuple[str, ...]]  # the loss computations ``forward`` dispatches to (``loss_<mode>``)

    def __init__(self, model: CCVAE, cfg: Config, fast: bool = True) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.fast = fast
        self.extras = nn.ModuleDict()  # the method's own modules, checkpointed beside the model
        # KL warm-up factor in [0, 1], set in place by the trainer before each step: a tensor, so that a
        # captured CUDA graph reads its current value instead of the one it saw at capture.
        self.register_buffer("kl_scale", torch.ones(()), persistent=False)
        # The capacity target C of this step in nats per latent (train.kl_capacity), also set by the trainer.
        self.register_buffer("kl_capacity", torch.zeros(()), persistent=False)
        self.capturable = False  # set by the trainer before make_optimizers() when the step is captured

    def forward(self, mode: str, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if mode not in self.MODES:
            raise ValueError(f"{self.name}: unknown mode {mode!r}")
        return getattr(self, f"loss_{mode}")(*args)

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers; their states are checkpointed under these names."""
        raise NotImplementedError

    def generator_parameters(self) -> list[nn.Parameter]:
        """The parameters the method trains on the generator side (the backbone and its own heads)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step. Returns ``(values, ran)``, both (len(TERMS),): a term whose computation
        was skipped this step has ``ran`` 0 and is left out of the logged mean."""
        raise NotImplementedError

    def kl_term(self, kl: torch.Tensor, image_numel: int, latents: int) -> torch.Tensor:
        """The weighted KL of the loss. ``kl`` is on the authors' scale (a summed KL / (B * C*H*W)) and holds
        ``latents`` Gaussian latents per batch row (2 for a pair's two z). Plain: kl_coef * warm-up * KL; with
        ``train.kl_capacity``: kl_coef * warm-up * |KL - C| (Burgess et al. 2018, Eq. 8), C on the same scale."""
        t = self.cfg.train
        if t.kl_capacity > 0:
            kl = (kl - self.kl_capacity * latents / image_numel).abs()
        return t.kl_coef * self.kl_scale * kl

    def step_variant(self, step: int) -> object:
        """Which form the step takes at ``step`` (one CUDA graph is captured per form); one form by default."""
        return None

    def capture_blocker(self) -> str | None:
        """Why this method's step cannot be captured as a CUDA graph (a host decision inside it), or None."""
        return None

    def diagnostics(self) -> dict[str, float]:
        """Values for ``DIAGNOSTICS``, measured when a metrics row is written (may sync the host)."""
        return {}

    def adam(self, params, lr: float | None = None, betas: tuple[float, float] | None = None) -> torch.optim.Adam:
        """Adam with the run's settings; fused (one kernel per step) on the fast path.

        For a captured step the learning rate is a tensor on the parameters' device (the schedule writes it in
        place; a float would be frozen into the graph) and, on CUDA, Adam is ``capturable`` (which capturing
        its step() requires)."""
        t = self.cfg.train
        impl = {"fused": True} if self.fast else {"foreach": False}
        lr = lr or t.lr
        if self.capturable:
            params = list(params)
            device = params[0].device
            lr = torch.tensor(lr, device=device)
            impl = {"fused": True, "capturable": device.type == "cuda"}
        return torch.optim.Adam(params, lr=lr, betas=betas or (t.beta1, t.beta2), **impl)


def done(*values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, ran)`` for a step where every term was computed."""
    v = torch.stack([x.detach().float() for x in values])
    return v, torch.ones_like(v)


def with_fixed_weights(module: nn.Module) -> Callable[..., Any]:
    """``module`` as a fixed function of its inputs: its parameters detached (buffers as they are), so that a loss
    through it trains only what feeds it (a judge, not a learner, in that term)."""
    fixed = {name: p.detach() for name, p in module.named_parameters()}
    return lambda *inputs: functional_call(module, fixed, inputs)
