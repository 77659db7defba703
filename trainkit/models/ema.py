"""`train.ema`: an exponential moving average of the model's weights, evaluated and saved beside them.

As timm's ModelEmaV3 and Keras' `use_ema`: after every `every` optimizer steps the average moves
towards the model by `1 - decay`; with `warmup` the decay starts low, `min(decay, (1 + t) / (10 + t))`
at step t, so that a short run is not an average dominated by its random start. Buffers (BatchNorm's
running statistics) are averaged too; integer buffers are copied. The decay is computed on the host
from the step count, so an update costs no host synchronisation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, every: int = 1, warmup: bool = True) -> None:
        """`model` already on its device and in its memory format: the average is a copy of it."""
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay, self.every, self.warmup = decay, every, warmup
        self._floats, self._others = _pairs(self.module, model)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the model after optimizer step `step` (1-based), every `every` steps."""
        if step % self.every:
            return
        ema, live = self._floats
        torch._foreach_lerp_(ema, live, 1.0 - self.decay_at(step))
        for e, m in self._others:
            e.copy_(m)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)


def _pairs(ema: nn.Module, model: nn.Module) -> tuple[tuple[list, list], list]:
    """The averaged tensors beside the model's: floating point ones (lerped) and the rest (copied)."""
    ema_t = [*ema.parameters(), *ema.buffers()]
    live_t = [*model.parameters(), *model.buffers()]
    floats: tuple[list, list] = ([], [])
    others = []
    for e, m in zip(ema_t, live_t, strict=True):
        if e.is_floating_point():
            floats[0].append(e)
            floats[1].append(m)  # the tensor itself, not a detached view: it follows an in-place .to()
        else:
            others.append((e, m))
    return floats, others
