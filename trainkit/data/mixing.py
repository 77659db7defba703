"""`data.batch_transforms`: MixUp and CutMix (torchvision v2's classes) on whole training batches.

One of the configured transforms is chosen at random for each batch (as timm does), and the choice and the
transform's own randomness are seeded by (seed, epoch, batch index), so a resumed run mixes exactly the
batches it would have mixed. The loss gets the soft targets; the meters get the dominant label of each mixed
image. Evaluation never mixes.
"""

from __future__ import annotations

import torch

from trainkit.config import specs
from trainkit.data.samplers import MIXING, derive_seed
from trainkit.errors import ConfigError

SOFT_TARGET_LOSSES = ("CrossEntropyLoss",)  # torch's losses that take class probabilities as targets


class BatchMix:
    """`(x, y) -> (x, targets for the loss, labels for the meters)`; without transforms, (x, y, y)."""

    def __init__(self, calls: list[specs.Call], num_classes: int, seed: int, loss: str) -> None:
        self.seed = seed
        self.mixers = []
        if calls and loss not in SOFT_TARGET_LOSSES:
            raise ConfigError(
                f"data.batch_transforms: {calls[0].name} makes soft targets, which train.loss {loss} cannot take; "
                f"use {' or '.join(SOFT_TARGET_LOSSES)}"
            )
        names = specs.transforms()
        for call in calls:
            try:
                self.mixers.append(names[call.name](*call.args, **{**call.kwargs, "num_classes": num_classes}))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{call.path}: {call.name} rejected its arguments: {exc}") from None

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.mixers or len(y) < 2:
            return x, y, y
        with torch.random.fork_rng(devices=[]):  # the transforms draw from torch's CPU generator: seed it here only
            torch.manual_seed(derive_seed(self.seed, epoch, MIXING + index))
            mixer = self.mixers[int(torch.randint(len(self.mixers), ()))]
            mixed, soft = mixer(x, y)
        return mixed, soft, soft.argmax(dim=1)
