"""metrics.jsonl (a line per epoch) and steps.jsonl (the train loss every `train.log_every` steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainkit.sinks.base import SinkKind, StepLosses


class Jsonl(StepLosses):
    """One JSON line per epoch in metrics.jsonl, flushed as it is written; and in steps.jsonl the train loss
    at each `train.log_every` steps (the mean since the line before), written with the epoch's line: the run
    directory exists only from the first checkpoint on, and a resume cuts both files back to whole epochs, so
    the steps of an unfinished epoch are never written."""

    def __init__(self, path: Path) -> None:
        super().__init__(1)
        self.path, self.steps_path = path, path.with_name("steps.jsonl")
        self.pending: list[dict[str, Any]] = []

    def step_loss(self, epoch: int, global_step: int, loss: float, stats: dict[str, Any]) -> None:
        self.pending.append({"epoch": epoch, "step": global_step, "loss": loss, "lr": stats.get("lr")})

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        with open(self.steps_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=True) + "\n" for r in self.pending)
        self.pending = []


SINK = SinkKind(make=lambda c: Jsonl(c.run_dir / "metrics.jsonl"))  # its files are the run's record (store.rundir)
