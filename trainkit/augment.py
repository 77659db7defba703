"""Batched augmentation on the training device, for cached uint8 images.

`BatchAugment` reads the v2 transform objects the config built and applies the
common ones to a whole batch at once: random crop with padding, horizontal and
vertical flips, center crop, pad, conversion to float and normalize. The crop
and flips run on uint8 (a quarter of the bytes); normalize is fused into the
float conversion. Any other transform runs per sample on the batch's tensors
(v2 transforms accept tensors), which is said once in the log.

Randomness comes from a generator seeded per batch, so a batch's augmentation
is a function of (seed, epoch, batch) and resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


def flatten(transform: Any) -> list[Any]:
    if isinstance(transform, v2.Compose):
        return [t for inner in transform.transforms for t in flatten(inner)]
    return [transform]


def _pair(size: Any) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))


def random_crop(size: tuple[int, int], padding: list[int] | None, mode: str) -> Op:
    h, w = size

    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if padding:
            x = F.pad(x, padding) if mode == "constant" else _pad_float(x, padding, mode)
        n, c, H, W = x.shape
        oy = torch.randint(0, H - h + 1, (n,), generator=gen, device=gen.device).to(x.device)
        ox = torch.randint(0, W - w + 1, (n,), generator=gen, device=gen.device).to(x.device)
        # one gather over the flattened image: far faster than advanced indexing or a loop
        window = (torch.arange(h, device=x.device)[:, None] * W + torch.arange(w, device=x.device)[None, :]).view(
            1, 1, -1
        )
        index = ((oy * W + ox)[:, None, None] + window).expand(n, c, h * w)
        return x.reshape(n, c, H * W).gather(2, index).view(n, c, h, w)

    return op


def _pad_float(x: torch.Tensor, padding: list[int], mode: str) -> torch.Tensor:
    # reflect/replicate padding is implemented for floating point only
    return F.pad(x.float(), padding, mode=_PAD_MODES[mode]).to(x.dtype)


def flip(p: float, dim: int) -> Op:
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=gen, device=gen.device) < p
        if x.device.type == "cpu":  # flipping only the chosen samples is 10x faster than a full where on CPU
            chosen = mask.nonzero().squeeze(1)
            out = x.clone()
            out[chosen] = x[chosen].flip(dim)
            return out
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(dim), x)  # no host sync on an accelerator

    return op


def center_crop(size: tuple[int, int]) -> Op:
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        H, W = x.shape[-2:]
        top, left = (H - size[0]) // 2, (W - size[1]) // 2
        return x[..., top : top + size[0], left : left + size[1]]

    return op


def per_sample(transform: Any) -> Op:
    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return torch.stack([transform(img) for img in x])

    return op


class BatchAugment:
    """A config's transforms, applied in order to a uint8 batch (N, C, H, W) on its device."""

    def __init__(self, transform: Any, device: torch.device) -> None:
        self.ops: list[Op] = []
        self.fallbacks: list[str] = []  # transforms that run per sample
        for t in flatten(transform):
            op = batched(t, device)
            if op is None:
                self.fallbacks.append(type(t).__name__)
                op = per_sample(t)
            self.ops.append(op)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, gen)
        return x


def batched(t: Any, device: torch.device) -> Op | None:
    """The batched form of a v2 transform, or None when it has none."""
    if isinstance(t, (v2.ToImage, v2.PILToTensor)):
        return lambda x, gen: x  # the batch is a uint8 tensor already
    if isinstance(t, v2.ToDtype) and t.dtype in (torch.float32, {torch.Tensor: torch.float32}):
        return (lambda x, gen: x.float().div_(255.0)) if t.scale else (lambda x, gen: x.float())
    if isinstance(t, v2.Normalize):
        mean = torch.tensor(t.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(t.std, device=device).view(1, -1, 1, 1)
        return lambda x, gen: (x.sub_(mean) if x.is_floating_point() else x.float().sub_(mean)).div_(std)
    if isinstance(t, v2.RandomCrop) and not t.pad_if_needed and t.fill in (0, None) and t.padding_mode in _PAD_MODES:
        return random_crop(_pair(t.size), list(t.padding) if t.padding else None, t.padding_mode)
    if isinstance(t, v2.RandomHorizontalFlip):
        return flip(t.p, 3)
    if isinstance(t, v2.RandomVerticalFlip):
        return flip(t.p, 2)
    if isinstance(t, v2.CenterCrop):
        return center_crop(_pair(t.size))
    if isinstance(t, v2.Pad) and t.fill in (0, None) and t.padding_mode == "constant":
        pad = [t.padding] * 4 if isinstance(t.padding, int) else _pad4(t.padding)
        return lambda x, gen: F.pad(x, pad)
    return None


def _pad4(padding: Any) -> list[int]:
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    left, top, right, bottom = padding
    return [left, right, top, bottom]
