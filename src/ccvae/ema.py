"""An exponential moving average of the model's weights, the copy that evaluation uses.

Polyak & Juditsky (1992) averaging in its exponential form, as DiT (Peebles & Xie 2023) and most image
generators keep it: after each step ``avg <- d * avg + (1 - d) * weights``. Batch norm's running statistics are
averaged alongside the parameters (they belong to the weights they were measured under), integer buffers
(batch norm's step count) are copied. Training never reads the average, so it changes no step of a run.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay used at the ``updates``-th update (1-based): ``min(decay, (1 + n) / (10 + n))``.

    The warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``: early on the average follows the
    weights closely instead of carrying the random initialisation for ~1 / (1 - decay) steps.
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """The average of ``model``'s state dict; ``update`` after each optimiser step, ``state_dict`` to save."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._float = [k for k, v in self.avg.items() if v.is_floating_point()]  # averaged
        self._other = [k for k, v in self.avg.items() if not v.is_floating_point()]  # copied

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average toward ``model``'s current weights."""
        self.updates += 1
        d = ema_decay_at(self.decay, self.updates)
        live = model.state_dict()
        torch._foreach_lerp_([self.avg[k] for k in self._float], [live[k].detach() for k in self._float], 1.0 - d)
        for k in self._other:
            self.avg[k].copy_(live[k])

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the averaged weights (a model state dict) and the update count."""
        return {"weights": self.avg, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s output; a missing or mismatched entry raises ``KeyError`` / ``ValueError``."""
        weights, updates = state["weights"], int(state["updates"])
        if set(weights) != set(self.avg):
            raise KeyError(f"averaged weights hold {len(weights)} entries, the model {len(self.avg)}")
        for k in self.avg:
            if weights[k].shape != self.avg[k].shape:
                raise ValueError(f"averaged weight {k} has shape {tuple(weights[k].shape)}, "
                                 f"the model {tuple(self.avg[k].shape)}")
            self.avg[k].copy_(weights[k])
        self.updates = updates
