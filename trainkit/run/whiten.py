"""`model.whiten`: initialize a first convolution as a whitening of the training images' patches.

The layer's filters become the principal directions of its input patches (as the model sees them: the
training images through the val transforms), each scaled by 1 / sqrt(eigenvalue + eps), so that its
outputs start decorrelated with unit variance; with twice as many filters as directions, each direction
comes as a +/- pair (a ReLU or GELU after it then keeps both signs). Its bias, if any, centres them.
This is the patch-whitening initialization of airbench (Keller Jordan, 2024) and of the DAWNBench
CIFAR-10 entries before it; freeze the layer with `model.freeze` to keep it fixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainkit.data.build import Data, subset_indices
from trainkit.data.images import BadSample
from trainkit.errors import ConfigError, DataError
from trainkit.models.schema import WhitenConfig
from trainkit.text import suggest


def whitening_filters(conv: nn.Conv2d, images: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias that whiten `conv`'s input patches of `images` (N, C, H, W)."""
    assert not isinstance(conv.padding, str), "checked by apply_whitening"
    patches = F.unfold(
        images.double(), conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride
    )
    patches = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # one row per patch, ordered as conv weights
    mean = patches.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov(patches.T))
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)  # largest variance first
    filters = vectors.T / torch.sqrt(values + eps)[:, None]
    d, out = filters.shape[0], conv.out_channels
    filters = torch.cat([filters, -filters]) if out == 2 * d else filters[:out]
    return filters.reshape(conv.weight.shape).float(), -(filters @ mean).float()


def sample_images(data: Data, count: int, seed: int) -> torch.Tensor:
    """`count` seeded random training images through the val transforms (no augmentation), stacked."""
    ds = data.train_through_val_transforms()
    images = [ds[i][0] for i in subset_indices(len(ds), min(count, len(ds)), seed)]
    images = [x for x in images if not isinstance(x, BadSample)]
    if not images:
        raise DataError("model.whiten: none of the sampled training images could be decoded")
    if len({tuple(x.shape) for x in images}) > 1:
        raise DataError(
            "model.whiten: the sampled training images differ in size after data.transforms.val; "
            "add a Resize or CenterCrop there"
        )
    return torch.stack(images)


def apply_whitening(model: nn.Module, cfg: WhitenConfig, data: Data, seed: int) -> str:
    """Initialize the layer `cfg.layer` of `model` from the training data; returns the line to log."""
    names = [n for n, _ in model.named_modules() if n]
    if cfg.layer not in names:
        raise ConfigError(f"model.whiten.layer: no submodule named {cfg.layer!r}{suggest(cfg.layer, names)}")
    conv = model.get_submodule(cfg.layer)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        kind = type(conv).__name__ + (" with groups" if isinstance(conv, nn.Conv2d) else "")
        raise ConfigError(f"model.whiten.layer: {cfg.layer} is a {kind}; name a Conv2d (groups 1) that sees the images")
    if isinstance(conv.padding, str):
        raise ConfigError(f"model.whiten.layer: {cfg.layer} has padding {conv.padding!r}; give it as a number")
    d = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    if conv.out_channels > d and conv.out_channels != 2 * d:
        raise ConfigError(
            f"model.whiten.layer: {cfg.layer} has {conv.out_channels} filters; its {conv.in_channels}x"
            f"{conv.kernel_size[0]}x{conv.kernel_size[1]} patches have {d} directions: use at most {d} "
            f"out_channels, or exactly {2 * d} (+/- pairs)"
        )
    images = sample_images(data, cfg.images, seed)
    if images.dim() != 4 or images.shape[1] != conv.in_channels:
        raise ConfigError(
            f"model.whiten.layer: {cfg.layer} takes {conv.in_channels} channels but the images have shape "
            f"{list(images.shape[1:])}; name the layer that sees the images"
        )
    weight, bias = whitening_filters(conv, images, cfg.eps)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.copy_(bias)
    return f"model.whiten: {cfg.layer} initialized from the patches of {len(images)} training images"
