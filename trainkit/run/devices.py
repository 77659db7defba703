"""Where and how tensors run: the device, the memory format, autocast."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from typing import Any

import torch
from torch import nn

from trainkit.errors import DeviceError
from trainkit.run.config import Config


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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # mallopt's parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed host memory for the next step rather than hand it back to the OS.

    A training step allocates and frees the same large tensors (a batch, activations, gradients) every step.
    By default glibc serves blocks of a few MB and up with fresh `mmap`s and unmaps them when freed, so each
    step pays page faults and zeroing of every such tensor again: 30% of a step for a small CNN at 128 px on
    this project's CPUs (`make bench`). Raising the mmap threshold is not enough: its ceiling is 32 MB, and at
    224 px one activation of a batch of 32 is 50 MB and more (EfficientNet-Lite0 unfrozen: 2.2 million page
    faults and 13 s a window of 6 steps, against none and 8 s this way). So no block is mmapped
    (M_MMAP_MAX 0) and the heap is never trimmed (M_TRIM_THRESHOLD -1): freed memory stays for the next step,
    as a caching allocator (jemalloc, tcmalloc, PyTorch's own on CUDA) keeps it; the process's RSS is its peak.
    Linux with glibc only; elsewhere it does nothing and says False.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


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
