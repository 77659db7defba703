"""The sink interface: where a run's progress goes (console, metrics.jsonl, visdom, TensorBoard).

The loop talks to one `Sinks` fan-out and never names a sink. A sink overrides the calls it
cares about; the others do nothing. In the order the loop makes them:

- `start(info)`: once, with the resolved config, the classes and (for a fresh run) the sample grid;
- `message(text)`: a line for people (the banner, notes, early stopping);
- `begin_epoch`, `step` (every `train.log_every` steps), `end_epoch(record, confusion)`: the epoch's
  metrics.jsonl record, and the val confusion matrix when the epoch evaluated;
- `close()`: send what is pending.

Each sink module declares what the rest needs of it in one `SinkKind` (`SINK`): how it is made from a
`SinkContext` (None: off in this config) and the files it writes in the run directory. `sinks.table` lists
them; a new sink is one module and one line there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.sinks.schema import LogConfig


@dataclass(frozen=True)
class RunInfo:
    name: str
    run_dir: Path
    config_text: str  # the resolved config as YAML
    classes: list[str]
    grid: torch.Tensor | None  # augmented training samples (3, H, W) in [0, 1]; None for a resumed run
    resumed: bool
    epochs: int = 1  # train.epochs
    steps_per_epoch: int = 1
    done_epochs: int = 0  # where the run starts: the epochs and the global steps (batches) already done
    done_steps: int = 0


class StepWindow:
    """The mean train loss over the steps since the last point, from the epoch's running mean (what `step`
    receives), one point at most every `every` global steps (and at the run's last step)."""

    def __init__(self, every: int, done_steps: int = 0) -> None:
        self.every, self.last = every, done_steps
        self.total, self.count = 0.0, 0
        self.seen = (0.0, 0)  # the epoch's running (loss sum, samples) at the previous call

    def begin_epoch(self) -> None:
        self.seen = (0.0, 0)

    def add(self, global_step: int, stats: dict[str, Any], last: bool = False) -> float | None:
        total, n = stats["loss"] * stats["samples"], stats["samples"]
        self.total += total - self.seen[0]
        self.count += n - self.seen[1]
        self.seen = (total, n)
        if (global_step - self.last < self.every and not last) or self.count <= 0:
            return None
        mean = self.total / self.count
        self.total, self.count, self.last = 0.0, 0, global_step
        return mean


class Sink:
    """A sink that does nothing: subclasses override what they need."""

    def start(self, info: RunInfo) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        pass

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        pass

    def close(self) -> None:
        pass


class StepLosses(Sink):
    """A sink that takes the train loss at most every `every` global steps (the mean since its last point):
    each point goes to `step_loss`. Subclasses that override `start` or `begin_epoch` call these too."""

    def __init__(self, every: int) -> None:
        self.window = StepWindow(every)
        self.steps = 1

    def start(self, info: RunInfo) -> None:
        self.window = StepWindow(self.window.every, info.done_steps)

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.steps = steps
        self.window.begin_epoch()

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        global_step = (epoch - 1) * self.steps + step
        loss = self.window.add(global_step, stats)
        if loss is not None:
            self.step_loss(epoch, global_step, loss, stats)

    def step_loss(self, epoch: int, global_step: int, loss: float, stats: dict[str, Any]) -> None:
        pass


class Sinks(Sink):
    """Every call goes to each sink in order."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = list(sinks)

    def __iter__(self):
        return iter(self.sinks)

    def start(self, info: RunInfo) -> None:
        for s in self.sinks:
            s.start(info)

    def message(self, text: str) -> None:
        for s in self.sinks:
            s.message(text)

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        for s in self.sinks:
            s.begin_epoch(epoch, epochs, steps)

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        for s in self.sinks:
            s.step(epoch, step, steps, stats)

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        for s in self.sinks:
            s.end_epoch(record, confusion)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


@dataclass(frozen=True)
class SinkContext:
    """What a sink is made from: the config's `log` section and where and how the run goes."""

    log: LogConfig
    run_dir: Path
    visdom_env: str
    log_every: int  # train.log_every
    resumed: bool
    say: Callable[[str], None] = print  # a line for people: `table.build` routes it through the console


@dataclass(frozen=True)
class SinkKind:
    """One kind of sink: `make` it for a run (None when the config turns it off), and the files it writes in
        the run directory (removed with --overwrite, and when a run ends before its first checkpoint), and what it
    does once the files written after the loop exist."""

    make: Callable[[SinkContext], Sink | None]
    files: tuple[str, ...] = ()
    # after the run's last files (report, test.json, eval.json) are written: (the log section, the run directory)
    finish: Callable[[LogConfig, Path], None] | None = None
