"""Evaluation: the one loop of a model over val batches (`outputs`), with test-time augmentation, and the
loss and meters of it (`evaluate`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainkit.errors import ConfigError
from trainkit.run import devices
from trainkit.run.metrics import EpochMeters


def tta_logits(net: nn.Module, x: torch.Tensor, tta: str = "off") -> torch.Tensor:
    """Logits for `x`; with test-time augmentation, the mean over the augmented views.

    `flip` averages the image and its mirror; `flip_translate` also averages both shifted by one
    pixel up-left and down-right (reflect padding), weighted as airbench does: 1/2 for the
    unshifted pair, 1/4 for each shifted pair.
    """
    if tta == "off":
        return net(x)
    if x.dim() != 4:
        raise ConfigError(
            f"eval.tta: {tta} needs image batches (N, C, H, W), got shape {list(x.shape)}; set eval.tta: off"
        )

    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return (net(v).float() + net(v.flip(3)).float()) / 2

    logits = mirrored(x)
    if tta == "flip_translate":
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        h, w = x.shape[-2:]
        padded = F.pad(x.float(), (1, 1, 1, 1), mode="reflect").to(x.dtype)
        shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
        logits = 0.5 * logits + 0.25 * sum(mirrored(v.contiguous(memory_format=fmt)) for v in shifted)
    return logits


@torch.inference_mode()
def outputs(
    net: nn.Module,
    batches: Iterable[tuple[torch.Tensor, Any]],
    device: torch.device,
    channels_last: bool = False,
    amp: str = "off",
    tta: str = "off",
) -> Iterator[tuple[torch.Tensor, Any]]:
    """(logits, targets) per batch, as training evaluates: on `device`, in its memory format and autocast, with
    its test-time augmentation; `net` in eval mode meanwhile. The one loop over val data, used by the training
    loop's evaluation, `eval`, `report` and `predict` (whose targets are the files' indices)."""
    was_training = net.training
    net.eval()
    try:
        for x, y in batches:
            x, y = devices.to_device(x, y, device, channels_last)
            with devices.autocast(device, amp):
                logits = tta_logits(net, x, tta)
            yield logits, y
    finally:
        net.train(was_training)


def evaluate(
    net: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    device: torch.device,
    num_classes: int,
    channels_last: bool = False,
    amp: str = "off",
    tta: str = "off",
) -> EpochMeters:
    """Meters (loss, top-1/top-5, confusion matrix) over `batches`, an iterable of (x, y), in eval mode."""
    meters = EpochMeters(num_classes)
    with torch.inference_mode():
        for logits, y in outputs(net, batches, device, channels_last, amp, tta):
            # in float32, as autocast computes a loss from half-precision logits
            meters.add(loss_fn(logits.float(), y), logits, y)
    meters.flush()
    return meters
