"""Batched augmentation on the training device, for cached uint8 images.

`BatchAugment` reads the v2 transform objects the config built and applies the
common ones to a whole batch at once: random crop with padding, horizontal and
vertical flips, center crop, pad, conversion to float and normalize. The crop
and flips run on uint8 (a quarter of the bytes); normalize is fused into the
float conversion. Any other transform runs per sample on the batch's tensors
(v2 transforms accept tensors), which is said once in the log.

Randomness comes from a generator seeded per batch, so a batch's augmentation
is a function of (seed, epoch, batch) and resumes exactly.

A batch from a ragged store (photos of many sizes, `data.cache_size`) is a list of (C, H, W) uint8 images.
`RandomResizedCrop` (torchvision's parameters: 10 tries, then a centred crop), `Resize` (shorter side, as
torchvision) and `CenterCrop` work on such a list, one image at a time with an antialiased bilinear resize;
the first of them that gives every image one size returns a tensor, and the rest of the ops run on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from trainkit.errors import DataError

Batch = torch.Tensor | list[torch.Tensor]  # a list: a ragged batch of (C, H, W) images
Op = Callable[[Any, torch.Generator], Any]  # a Batch in, a Batch out
RAGGED = "ragged"  # the attribute of an op that takes a ragged batch
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
        return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(dim), x)  # no host sync on an accelerator

    return op


def center_crop(size: tuple[int, int]) -> Op:
    def crop(x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H < size[0] or W < size[1]:
            raise DataError(f"CenterCrop {list(size)}: an image of {H}x{W} is smaller; resize it first")
        top, left = int(round((H - size[0]) / 2)), int(round((W - size[1]) / 2))
        return x[..., top : top + size[0], left : left + size[1]]

    def op(x: Batch, gen: torch.Generator) -> torch.Tensor:
        return torch.stack([crop(img) for img in x]) if isinstance(x, list) else crop(x)

    setattr(op, RAGGED, True)
    return op


def _resize_one(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An antialiased bilinear resize of one (C, H, W) uint8 image (uint8 directly on the CPU)."""
    if tuple(x.shape[-2:]) == size:
        return x
    if x.device.type == "cpu":
        return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    y = F.interpolate(x[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return y.round_().clamp_(0, 255).to(torch.uint8)


def resize(size: list[int]) -> Op:
    """`Resize(S)`: the shorter side to S, the longer in proportion (int, as torchvision); `Resize([H, W])`."""

    def target(h: int, w: int) -> tuple[int, int]:
        if len(size) == 2:
            return int(size[0]), int(size[1])
        s = int(size[0])
        return (s, int(s * w / h)) if h <= w else (int(s * h / w), s)

    def op(x: Batch, gen: torch.Generator) -> Batch:
        out = [_resize_one(img, target(*img.shape[-2:])) for img in x]
        return out if len({tuple(o.shape) for o in out}) > 1 else torch.stack(out)

    setattr(op, RAGGED, True)
    return op


def random_resized_crop(size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float]) -> Op:
    """torchvision's RandomResizedCrop, one image at a time, its parameters drawn from the batch's generator."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def params(H: int, W: int, gen: torch.Generator) -> tuple[int, int, int, int]:
        area = H * W
        for _ in range(10):
            u = torch.rand(4, generator=gen, device=gen.device).tolist()
            target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= W and 0 < h <= H:
                return min(int(u[2] * (H - h + 1)), H - h), min(int(u[3] * (W - w + 1)), W - w), h, w
        in_ratio = W / H  # torchvision's fallback: the largest centred crop within the ratio range
        if in_ratio < ratio[0]:
            w, h = W, int(round(W / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = H, int(round(H * ratio[1]))
        else:
            w, h = W, H
        return (H - h) // 2, (W - w) // 2, h, w

    def op(x: Batch, gen: torch.Generator) -> torch.Tensor:
        out = []
        for img in x:
            i, j, h, w = params(img.shape[-2], img.shape[-1], gen)
            out.append(_resize_one(img[:, i : i + h, j : j + w], size))
        return torch.stack(out)

    setattr(op, RAGGED, True)
    return op


def per_sample(transform: Any) -> Op:
    def op(x: Batch, gen: torch.Generator) -> Batch:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        where = x[0].device if isinstance(x, list) else x.device
        devices = [where.index or 0] if where.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = [transform(img) for img in x]
        return out if len({tuple(o.shape) for o in out}) > 1 else torch.stack(out)

    setattr(op, RAGGED, True)
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

    def __call__(self, x: Batch, gen: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            if isinstance(x, list) and not getattr(op, RAGGED, False):
                x = stack(x)
            x = op(x, gen)
        return stack(x) if isinstance(x, list) else x


def _bilinear(t: Any) -> bool:
    """Bilinear with antialias (v2's default): what the batched resize does. v2 may keep the mode as a str."""
    return str(getattr(t.interpolation, "value", t.interpolation)) == "bilinear" and t.antialias is not False


def stack(x: list[torch.Tensor]) -> torch.Tensor:
    sizes = {tuple(img.shape) for img in x}
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise DataError(
            f"data.cache_size: the images are still of many sizes ({a[2]}x{a[1]}, {b[2]}x{b[1]}, ...) where the "
            "transforms need one; start data.transforms with RandomResizedCrop, or Resize and CenterCrop"
        )
    return torch.stack(x)


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
    if isinstance(t, v2.RandomResizedCrop) and _bilinear(t):
        return random_resized_crop(_pair(t.size), tuple(t.scale), tuple(t.ratio))
    if isinstance(t, v2.Resize) and t.max_size is None and _bilinear(t):
        return resize(list(t.size))
    if isinstance(t, v2.Pad) and t.fill in (0, None) and t.padding_mode == "constant":
        pad = [t.padding] * 4 if isinstance(t.padding, int) else _pad4(t.padding)
        return lambda x, gen: F.pad(x, pad)
    return None


def _pad4(padding: Any) -> list[int]:
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    left, top, right, bottom = padding
    return [left, right, top, bottom]
