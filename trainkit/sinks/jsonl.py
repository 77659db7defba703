"""metrics.jsonl (a line per epoch) and steps.jsonl (the train loss every `train.log_every` steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainkit.sinks.base import RunInfo, Sink, SinkKind, StepWindow


class Jsonl(Sink):
    """One JSON line per epoch in metrics.jsonl, flushed as it is written; and in steps.jsonl the train loss
    at each `train.log_every` steps (the mean since the line before), written with the epoch's line: the run
    directory exists only from the first checkpoint on, and a resume cuts both files back to whole epochs, so
    the steps of an unfinished epoch are never written."""

    def __init__(self, path: Path) -> None:
        self.path, self.steps_path = path, path.with_name("steps.jsonl")
        self.window = StepWindow(1)
        self.pending: list[dict[str, Any]] = []
        self.steps = 1

    def start(self, info: RunInfo) -> None:
        self.window = StepWindow(1, info.done_steps)

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.steps = steps
        self.window.begin_epoch()

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        global_step = (epoch - 1) * self.steps + step
        loss = self.window.add(global_step, stats)
        if loss is not None:
            self.pending.append({"epoch": epoch, "step": global_step, "loss": loss, "lr": stats.get("lr")})

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        with open(self.steps_path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=True) + "\n" for r in self.pending)
        self.pending = []


SINK = SinkKind(make=lambda c: Jsonl(c.run_dir / "metrics.jsonl"))  # its files are the run's record (store.rundir)
