"""Epoch meters on top of torchnet (the only module that imports it), and their sums over DDP ranks.

Each step only appends detached device tensors to a buffer; every
`flush_every` steps (and when read) the buffer goes to the host in one
transfer and into torchnet's meters. So there is no host synchronisation per
step beyond what the progress display needs.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Any

import numpy as np
import torch


def _torchnet_meters() -> None:
    """torchnet's __init__ imports all of torchnet, its visdom logger too, and with it visdom, requests,
    urllib3 and websocket (70 modules, ~0.1 s of every command that evaluates). trainkit uses torchnet's meters
    alone (visdom has a sink of its own): the package is registered without running its __init__, and
    `torchnet.meter` is imported from its folder as usual (any other submodule still can be)."""
    if "torchnet" in sys.modules:
        return
    spec = importlib.util.find_spec("torchnet")  # finds it without importing it
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed: the import below says so
    sys.modules["torchnet"] = importlib.util.module_from_spec(spec)


_torchnet_meters()
from torchnet import meter  # noqa: E402

from trainkit.run import distributed  # noqa: E402


class EpochMeters:
    """Loss (sample-weighted mean), top-1/top-5 accuracy, confusion matrix, images/s."""

    def __init__(self, num_classes: int, flush_every: int = 50, confusion: bool = True) -> None:
        self.num_classes = num_classes
        self.topk = (1, 5) if num_classes > 5 else (1,)
        self.flush_every = flush_every
        self.loss = meter.AverageValueMeter()
        self.accuracy = meter.ClassErrorMeter(topk=list(self.topk), accuracy=True)
        self.confusion = meter.ConfusionMeter(num_classes) if confusion else None
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.start = time.perf_counter()
        self.samples = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """`loss` is the batch mean; it is weighted by the batch size."""
        self._pending.append((loss.detach().float() * targets.shape[0], logits.detach(), targets.detach()))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        sums = torch.stack([s for s, _, _ in self._pending]).cpu().tolist()
        sizes = [t.shape[0] for _, _, t in self._pending]
        logits = torch.cat([lg.float() for _, lg, _ in self._pending]).cpu()
        targets = torch.cat([t for _, _, t in self._pending]).cpu()
        self._pending.clear()
        for s, n in zip(sums, sizes):
            # torchnet's AverageValueMeter.add(value, n) adds `value` once and counts n:
            # passing the batch *sum* makes its mean the per-sample mean.
            self.loss.add(s, n)
        self.accuracy.add(logits, targets)
        if self.confusion is not None:
            self.confusion.add(logits, targets)
        self.samples += len(targets)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def summary(self) -> dict[str, Any]:
        """Flush and return plain floats: loss, acc, acc5 (fractions), samples, time, images/s."""
        self.flush()
        if self.samples == 0:
            return {"loss": float("nan"), "acc": float("nan"), "samples": 0, "time": self.elapsed}
        out: dict[str, Any] = {
            "loss": float(self.loss.value()[0]),
            "acc": float(self.accuracy.value(1)) / 100.0,
            "samples": self.samples,
            "time": self.elapsed,
            "images_per_s": self.samples / max(self.elapsed, 1e-9),
        }
        if 5 in self.topk:
            out["acc5"] = float(self.accuracy.value(5)) / 100.0
        return out

    def state(self) -> dict[str, Any]:
        """Plain data to carry a partial epoch across a stop and resume (no confusion matrix)."""
        self.flush()
        return {
            "loss_sum": float(self.loss.sum),
            "samples": int(self.samples),
            "errors": {str(k): float(v) for k, v in self.accuracy.sum.items()},
            "elapsed": self.elapsed,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if not state.get("samples"):
            return
        self.loss.add(state["loss_sum"], state["samples"])
        for k, v in state["errors"].items():
            self.accuracy.sum[int(k)] = v
        self.accuracy.n = state["samples"]
        self.samples = state["samples"]
        self.start -= state["elapsed"]

    def confusion_matrix(self) -> np.ndarray:
        """Rows are true classes, columns predicted classes (counts)."""
        self.flush()
        if self.confusion is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return np.asarray(self.confusion.value(), dtype=np.int64)


def summary_from(state: dict[str, Any]) -> dict[str, Any]:
    """`EpochMeters.summary()` computed from a `state()` (for example one summed over DDP ranks)."""
    n = state["samples"]
    if not n:
        return {"loss": float("nan"), "acc": float("nan"), "samples": 0, "time": state["elapsed"]}
    out: dict[str, Any] = {
        "loss": state["loss_sum"] / n,
        "acc": 1.0 - state["errors"]["1"] / n,
        "samples": int(n),
        "time": state["elapsed"],
        "images_per_s": n / max(state["elapsed"], 1e-9),
    }
    if "5" in state["errors"]:
        out["acc5"] = 1.0 - state["errors"]["5"] / n
    return out


def summarize(
    meters: EpochMeters, dist: distributed.Dist, device: torch.device, confusion: bool = False
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The meters' summary (and confusion matrix), summed over every rank under DDP."""
    if not dist.enabled:
        return meters.summary(), meters.confusion_matrix() if confusion else None
    return summary_from(reduced_state(meters, dist, device)), (
        distributed.all_sum_array(meters.confusion_matrix(), device) if confusion else None
    )


def reduced_state(meters: EpochMeters, dist: distributed.Dist, device: torch.device) -> dict[str, Any]:
    """`meters.state()` summed over ranks (rank 0's elapsed time)."""
    st = meters.state()
    if not dist.enabled:
        return st
    keys = sorted(st["errors"], key=int)
    sums = distributed.all_sum([st["loss_sum"], st["samples"], *(st["errors"][k] for k in keys)], device)
    return {**st, "loss_sum": sums[0], "samples": int(round(sums[1])), "errors": dict(zip(keys, sums[2:]))}


def per_class(conf: np.ndarray) -> dict[str, list[float]]:
    """Per-class accuracy (= recall) and precision from a confusion matrix."""
    tp = np.diag(conf).astype(float)
    support = conf.sum(axis=1).astype(float)
    predicted = conf.sum(axis=0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
    return {"recall": recall.tolist(), "precision": precision.tolist(), "support": support.astype(int).tolist()}


def most_confused(conf: np.ndarray, classes: list[str], n: int = 5) -> list[tuple[str, str, int]]:
    """The n largest off-diagonal cells: (true class, predicted class, count)."""
    off = conf.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:n]
    pairs = [np.unravel_index(i, off.shape) for i in flat]
    return [(classes[t], classes[p], int(off[t, p])) for t, p in pairs if off[t, p] > 0]
