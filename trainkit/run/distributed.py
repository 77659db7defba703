"""Data-parallel training on PyTorch's own engine: torchrun launches, DDP averages gradients.

`trainkit train --nproc N` starts `torch.distributed.run --standalone` with N
processes (see `launch`); `torchrun --nproc_per_node N -m trainkit train ...` does the same by
hand (and across machines, with torchrun's rendezvous flags). Each process
reads its rank from torchrun's environment; the backend is NCCL on CUDA and
gloo on CPU. Only rank 0 writes files, plots and progress; metrics are summed
over ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The rank of this process as torchrun set it (a single process without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(d: Dist, device: torch.device) -> None:
    if d.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def from_rank0(text: str) -> str:
    """Rank 0's `text`, on every rank (its verdict on something only rank 0 checks)."""
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, compile: bool) -> torch.nn.Module:
    """What forward calls: the model, in DDP across the ranks, compiled when asked. DDP takes the parameters
    that train when it is made; a run that changes them (train.finetune's switch) wraps the model again."""
    net = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return net


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_of(spec: str, d: Dist) -> str:
    """Each rank takes the GPU of its local rank."""
    if d.enabled and spec in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{d.local_rank}"
    return spec


def _tensor(values: Any, device: torch.device) -> torch.Tensor:
    # gloo reduces CPU tensors, NCCL GPU tensors
    where = device if device.type == "cuda" else torch.device("cpu")
    return torch.as_tensor(values, dtype=torch.float64, device=where)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    t = _tensor(values, device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def all_sum_array(arr: np.ndarray, device: torch.device) -> np.ndarray:
    t = _tensor(arr, device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy().round().astype(np.int64)


def agreed_signal(local: int | None, device: torch.device) -> int | None:
    """The signal any rank received, known to every rank (so all stop at the same step)."""
    t = _tensor([local or 0], device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    value = int(t.item())
    return value or None


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank."""
    t = _tensor([float(flag)], device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
