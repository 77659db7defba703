"""`data.transforms` as torchvision v2 transforms: built from the config's calls, val's default, and the
Normalize a sample grid undoes."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from trainkit.config import specs
from trainkit.data.schema import DataConfig
from trainkit.errors import ConfigError


def build_transform(calls: list[specs.Call]) -> v2.Compose:
    names = specs.transforms()
    out = []
    for call in calls:
        try:
            out.append(names[call.name](*call.args, **call.kwargs))
        except Exception as exc:  # the constructor's own complaint, with the key path
            raise ConfigError(f"{call.path}: {call.name} rejected its arguments: {exc}") from None
    return v2.Compose(out)


def normalize_of(calls: list[specs.Call]) -> specs.Call | None:
    return next((c for c in calls if c.name == "Normalize"), None)


def val_calls(cfg: DataConfig) -> list[specs.Call]:
    """The val transforms: as given, or ToTensor plus the Normalize of train."""
    if cfg.transforms.val_calls is not None:
        return cfg.transforms.val_calls
    calls = [specs.Call("ToTensor", path="data.transforms.val")]
    norm = normalize_of(cfg.transforms.train_calls)
    return calls + ([norm] if norm else [])


def train_calls(cfg: DataConfig) -> list[specs.Call]:
    return cfg.transforms.train_calls or [specs.Call("ToTensor", path="data.transforms.train")]


def unnormalize(images: torch.Tensor, calls: list[specs.Call]) -> torch.Tensor:
    norm = normalize_of(calls)
    if norm is None:
        return images
    kw = dict(zip(("mean", "std"), norm.args)) | norm.kwargs
    mean = torch.tensor(kw["mean"], dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(kw["std"], dtype=images.dtype).view(1, -1, 1, 1)
    return images * std + mean
