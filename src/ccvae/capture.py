"""The whole training step as one CUDA graph, captured once and replayed (``train.capture = "cuda-graph"``).

The network is small (27.65 GFLOP a step at the paper's size), so on a GPU the eager step is bound by
kernel launches, not FLOPs. A graph replays every kernel of the step (image sampling, noise, both cycles,
backward, both fused Adam updates) with one launch. What a replay needs, and how it is provided:

- **Static inputs.** The only per-step input is this step's slice of the epoch order, copied into a
  buffer the graph reads. The learning rate and the KL warm-up factor are device tensors written in
  place before each replay (``Method.adam``, ``Method.kl_scale``); Adam is ``capturable``.
- **Random numbers from the device's default generator**, the one CUDA graphs replay safely (each replay
  advances its offset as the eager ops would). The eager path's own generators (``g_data``, ``g_noise``)
  are not used, so a captured run draws other images and noise than an eager run of the same seed; it
  checkpoints the default generator's state, so its resume is exact.
- **One graph per form of the step** (``Method.step_variant``: the ccvae step with and without the reverse
  cycle when ``train.reverse_every > 1``, and before and after a ``train.cross_cycle_start``), each captured at its
  first use after a few warm-up steps on a side stream (CUDA's requirement, which also builds Adam's state). The
  warm-up steps are undone: weights, buffers, optimiser state and the generator are restored exactly, so capture
  changes nothing a run learns.

``use_graph=False`` runs the same path (static buffers, tensor hyper-parameters, warm-up and restore)
without a graph: what the CPU tests check against the plain step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ccvae.methods.base import Method, StepContext

WARMUP_STEPS = 3


class CapturedStep:
    """``step(flat, step_index)`` -> (values, ran) of the method's TERMS, by replaying a captured graph.

    ``make_ctx(flat, step_index)`` builds the StepContext the method's ``train_step`` is given; the
    returned tensors belong to the graph and are overwritten by the next replay (copy them first).
    """

    def __init__(self, method: Method, optimizers: dict[str, torch.optim.Optimizer],
                 make_ctx: Callable[[torch.Tensor, int], StepContext], batch: int, device: torch.device,
                 use_graph: bool = True) -> None:
        if use_graph and device.type != "cuda":
            raise ValueError("CUDA graph capture needs a CUDA device")
        self.method, self.optimizers, self.make_ctx, self.device = method, optimizers, make_ctx, device
        self.use_graph = use_graph
        self.flat = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) the static input
        self.graphs: dict[object, torch.cuda.CUDAGraph | None] = {}
        self.outputs: dict[object, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, flat: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = self.method.step_variant(step)
        self.flat.copy_(flat)
        if key not in self.graphs:
            self._capture(key, step)
        graph = self.graphs[key]
        if graph is None:  # use_graph=False: the same step, run eagerly on the static buffers
            return self.method.train_step(self.make_ctx(self.flat, step))
        graph.replay()
        return self.outputs[key]

    # -- capture ------------------------------------------------------------------------------------
    def _capture(self, key: object, step: int) -> None:
        ctx = self.make_ctx(self.flat, step)
        saved = self._snapshot([g for g in (ctx.g_data, ctx.g_noise) if g is not None])
        if self.use_graph:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self.method.train_step(ctx)
            torch.cuda.current_stream(self.device).wait_stream(side)
        else:
            for _ in range(WARMUP_STEPS):
                self.method.train_step(ctx)
        self._restore(saved)
        if not self.use_graph:
            self.graphs[key] = None
            return
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)  # gradients are then allocated inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the kernels; nothing runs until replay
            self.outputs[key] = self.method.train_step(ctx)
        self.graphs[key] = graph

    def _snapshot(self, generators: list[torch.Generator]) -> dict:
        """Copies of everything a warm-up step changes: weights, buffers, optimiser state, the generators."""
        return {
            "generators": [(g, g.get_state()) for g in generators],
            "module": [t.detach().clone() for t in _tensors(self.method)],
            "optim": {name: {id(p): {k: v.clone() for k, v in st.items() if torch.is_tensor(v)}
                             for p, st in opt.state.items()} for name, opt in self.optimizers.items()},
            "rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.get_rng_state(),
        }

    @torch.no_grad()
    def _restore(self, saved: dict) -> None:
        """Write the snapshot back in place (the graph keeps these tensors' addresses). Adam state that the
        warm-up created is zeroed: a fresh Adam's lazily built state is zeros and step 0."""
        for t, v in zip(_tensors(self.method), saved["module"], strict=True):
            t.copy_(v)
        for name, opt in self.optimizers.items():
            before = saved["optim"][name]
            for p, st in opt.state.items():
                for k, v in st.items():
                    if torch.is_tensor(v):
                        v.copy_(before[id(p)][k]) if id(p) in before else v.zero_()
        for g, state in saved["generators"]:
            g.set_state(state)
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["rng"], self.device)
        else:
            torch.set_rng_state(saved["rng"])


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers (batch norm's running statistics and counters), in a fixed order."""
    return [*module.parameters(), *module.buffers()]
