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
The store's images are channels_last views ((C, H, W) of (H, W, C) pixels), and every op keeps that layout:
the resize is 1.8x faster so on the CPU, the batch reaches a channels_last model with no copy, and
`ToDtype(scale=True)` then `Normalize` run as one normalize over (N, H*W*C) rows.
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
            out = x.clone()  # in x's layout
            if _channels_last(x):  # one image at a time: 3x faster than a gather of channels_last images
                for i in chosen.tolist():
                    out[i] = x[i].flip(dim - 1)
            else:
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
        return stack([crop(img) for img in x]) if isinstance(x, list) else crop(x)

    setattr(op, RAGGED, True)
    return op


def _resize_one(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An antialiased bilinear resize of one (C, H, W) uint8 image (uint8 directly on the CPU)."""
    if tuple(x.shape[-2:]) == size:
        return x
    if x.device.type == "cpu":
        if x.stride(0) == 1:  # channels innermost (the photo store's layout): kept so, as a dense (1, C, H, W)
            x = x.permute(1, 2, 0)[None].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        else:
            x = x[None]
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
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
        return out if len({tuple(o.shape) for o in out}) > 1 else stack(out)

    setattr(op, RAGGED, True)
    return op


def random_resized_crop(size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float]) -> Op:
    """torchvision's RandomResizedCrop, one image at a time, its parameters drawn from the batch's generator."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def boxes(shapes: list[tuple[int, int]], gen: torch.Generator) -> list[tuple[int, int, int, int]]:
        """(top, left, height, width) of each image's crop: torchvision's 10 tries, drawn for the whole batch
        at once (one draw of (N, 10, 4) numbers, not up to 10 small draws per image)."""
        hw = torch.tensor(shapes, dtype=torch.float64)
        H, W = hw[:, :1], hw[:, 1:]
        u = torch.rand((len(shapes), 10, 4), generator=gen, device=gen.device, dtype=torch.float64).cpu()
        target = H * W * (scale[0] + u[..., 0] * (scale[1] - scale[0]))
        aspect = torch.exp(log_ratio[0] + u[..., 1] * (log_ratio[1] - log_ratio[0]))
        w, h = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        rows = torch.arange(len(shapes))
        first = fits.to(torch.uint8).argmax(dim=1)  # the first try that fits
        h, w, u = h[rows, first], w[rows, first], u[rows, first]
        top = torch.minimum((u[:, 2] * (H[:, 0] - h + 1)).floor(), H[:, 0] - h)
        left = torch.minimum((u[:, 3] * (W[:, 0] - w + 1)).floor(), W[:, 0] - w)
        out = [(int(t), int(lf), int(hh), int(ww)) for t, lf, hh, ww in torch.stack([top, left, h, w], 1).tolist()]
        for k in (~fits.any(dim=1)).nonzero().flatten().tolist():
            out[k] = centred(*shapes[k])
        return out

    def centred(H: int, W: int) -> tuple[int, int, int, int]:
        in_ratio = W / H  # torchvision's fallback: the largest centred crop within the ratio range
        if in_ratio < ratio[0]:
            w, h = W, int(round(W / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = H, int(round(H * ratio[1]))
        else:
            w, h = W, H
        return (H - h) // 2, (W - w) // 2, h, w

    def op(x: Batch, gen: torch.Generator) -> torch.Tensor:
        crops = boxes([(img.shape[-2], img.shape[-1]) for img in x], gen)
        return stack([_resize_one(img[:, i : i + h, j : j + w], size) for img, (i, j, h, w) in zip(x, crops)])

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
        return out if len({tuple(o.shape) for o in out}) > 1 else stack(out)

    setattr(op, RAGGED, True)
    return op


class BatchAugment:
    """A config's transforms, applied in order to a uint8 batch (N, C, H, W) on its device."""

    def __init__(self, transform: Any, device: torch.device) -> None:
        self.ops: list[Op] = []
        self.fallbacks: list[str] = []  # transforms that run per sample
        for t in _fused(flatten(transform), device):
            op = batched(t, device) if isinstance(t, torch.nn.Module) else t  # not a Module: a fused op already
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
    """One (N, C, H, W) batch of (C, H, W) images of one size, channels_last when they all are (a plain
    torch.stack would copy them into the planar layout)."""
    sizes = {tuple(img.shape) for img in x}
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise DataError(
            f"data.cache_size: the images are still of many sizes ({a[2]}x{a[1]}, {b[2]}x{b[1]}, ...) where the "
            "transforms need one; start data.transforms with RandomResizedCrop, or Resize and CenterCrop"
        )
    if all(img.dim() == 3 and img.shape[0] > 1 and img.stride(0) == 1 for img in x):  # channels innermost
        return torch.stack([img.permute(1, 2, 0) for img in x]).permute(0, 3, 1, 2)
    return torch.stack(x)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def normalize(mean: list[float], std: list[float], device: torch.device) -> Op:
    """`Normalize` (after `ToDtype(scale=True)` when the two are fused: mean and std then times 255). A
    channels_last batch is normalized as (N, H*W*C) rows against one (H*W*C) row of each channel's mean and
    1/std: a per-channel broadcast over the innermost dimension of 3 is 4x slower on the CPU."""
    m, s = torch.tensor(mean, device=device), torch.tensor(std, device=device)
    rows: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def op(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not _channels_last(x):
            x = x if x.is_floating_point() else x.float()
            return x.sub_(m.view(1, -1, 1, 1)).div_(s.view(1, -1, 1, 1))
        n, c, h, w = x.shape
        if (h, w) not in rows:  # one mean and std for every channel broadcasts as in the planar case
            rows[h, w] = m.expand(c).repeat(h * w), (1.0 / s).expand(c).repeat(h * w)
        mean_row, inv_row = rows[h, w]
        flat = x.permute(0, 2, 3, 1).reshape(n, -1)  # a view; its float() is 3x faster than the 4-D one's
        flat = flat if flat.is_floating_point() else flat.float()
        return flat.sub_(mean_row).mul_(inv_row).view(n, h, w, c).permute(0, 3, 1, 2)

    return op


def _fused(transforms: list[Any], device: torch.device) -> list[Any]:
    """`ToDtype(float32, scale=True)` then `Normalize`, as one normalize from uint8 (one pass fewer)."""
    out: list[Any] = []
    for t in transforms:
        prev = out[-1] if out else None
        if isinstance(t, v2.Normalize) and isinstance(prev, v2.ToDtype) and _to_float(prev) and prev.scale:
            out[-1] = normalize([255.0 * v for v in t.mean], [255.0 * v for v in t.std], device)
        else:
            out.append(t)
    return out


def _to_float(t: v2.ToDtype) -> bool:
    return t.dtype in (torch.float32, {torch.Tensor: torch.float32})


def batched(t: Any, device: torch.device) -> Op | None:
    """The batched form of a v2 transform, or None when it has none."""
    if isinstance(t, (v2.ToImage, v2.PILToTensor)):
        return lambda x, gen: x  # the batch is a uint8 tensor already
    if isinstance(t, v2.ToDtype) and _to_float(t):
        return (lambda x, gen: x.float().div_(255.0)) if t.scale else (lambda x, gen: x.float())
    if isinstance(t, v2.Normalize):
        return normalize(list(t.mean), list(t.std), device)
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
