"""Where and how tensors run: the device, the memory format, autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from trainkit.errors import DeviceError
from trainkit.schema import Config


def select_device(spec: str) -> torch.device:
    """`auto` is CUDA, else MPS, else CPU; an explicit device must exist."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if spec.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no usable CUDA device"
            raise DeviceError(f"device: {spec} does not exist; this machine has {have}; use device: auto or cpu")
    if spec == "mps" and not mps_ok:
        raise DeviceError("device: mps is not available on this machine; use device: auto or cpu")
    return torch.device(spec)


def set_threads(threads: int | str) -> None:
    """`threads`: torch's intra-op threads (`auto` leaves torch's default)."""
    if isinstance(threads, int):
        torch.set_num_threads(threads)


def channels_last(cfg: Config, model: nn.Module) -> bool:
    """`train.channels_last`, where `auto` means: yes for convolutional models (faster on CPU and GPU)."""
    if cfg.train.channels_last == "auto":
        return any(isinstance(m, nn.Conv2d) for m in model.modules())
    return bool(cfg.train.channels_last)


def autocast(device: torch.device, amp: str) -> Any:
    """The autocast context of `train.amp` (a no-op for `off`)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(
    x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on `device`, images in channels_last when asked (only 4-D tensors have that format)."""
    fmt = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    return x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)
