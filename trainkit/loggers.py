"""The sinks of every run, the console (tqdm or plain lines) and metrics.jsonl, and `build`, which
chooses a run's sinks from `cfg.log` and the rank (the interface is in `sinks`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from trainkit.errors import plural
from trainkit.metrics import fmt_pct
from trainkit.schema import Config
from trainkit.sinks import RunInfo, Sink, Sinks, StepWindow


def _columns() -> int:
    """The width of the terminal on stderr: 0 when there is none (or the --nproc launcher's terminal, via a pipe)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return int(os.environ.get("TRAINKIT_TERMINAL_COLUMNS", "0") or 0)


class Console(Sink):
    """A tqdm bar per epoch on a terminal, plain lines every N steps otherwise; a summary line per epoch."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        if mode == "auto":  # a bar on a terminal that has a width (tqdm draws nothing in 0 columns)
            mode = "bar" if _columns() > 0 else "lines"
        self.mode = mode
        self.bar: tqdm | None = None
        self.epochs = 0

    def message(self, text: str) -> None:
        if self.mode == "quiet" and not text.startswith(("warning", "stopped by")):
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        if self.mode == "bar":
            tty = sys.stderr.isatty()  # else the launcher's terminal, at a fixed width
            self.bar = tqdm(
                total=steps,
                desc=f"epoch {epoch}/{epochs}",
                leave=False,
                dynamic_ncols=tty,
                ncols=None if tty else _columns(),
            )

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        postfix = {
            "loss": f"{stats['loss']:.4f}",
            "acc": fmt_pct(stats.get("acc")),
            "lr": f"{stats['lr']:.3g}",
            "img/s": f"{stats.get('images_per_s', 0):.0f}",
        }
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(postfix, refresh=True)
        elif self.mode == "lines":
            text = " ".join(f"{k} {v}" for k, v in postfix.items())
            self.message(f"epoch {epoch}/{self.epochs} step {step}/{steps} {text}")

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.mode == "quiet":
            return
        parts = [
            f"epoch {record['epoch']}/{self.epochs}",
            f"train_loss {record['train_loss']:.4f}",
            f"train_acc {fmt_pct(record.get('train_acc'))}",
        ]
        if "val_loss" in record:
            parts += [f"val_loss {record['val_loss']:.4f}", f"val_acc {fmt_pct(record['val_acc'])}"]
        parts += [f"lr {record['lr']:.3g}", f"{record['images_per_s']:.0f} img/s", f"{record['time']:.1f}s"]
        if record.get("best"):
            parts.append("*best*")
        if record.get("bad_images"):
            parts.append(f"skipped {plural(record['bad_images'], 'bad image')}")
        print(" | ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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


def warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build(cfg: Config, run_dir: Path, main: bool, resumed: bool) -> Sinks:
    """The sinks of a run: none but on rank 0 (only it prints, plots and writes)."""
    if not main:
        return Sinks([])
    console = Console(cfg.log.progress)
    sinks: list[Sink] = [console, Jsonl(run_dir / "metrics.jsonl")]
    if cfg.log.visdom.enabled:
        from trainkit.plots import VisdomSink

        env = cfg.visdom_env
        sinks.append(VisdomSink(cfg.log.visdom, env, resume=resumed, warn=warn, say=console.message))
    if cfg.log.tensorboard.enabled:
        from trainkit.tensorboard_sink import TensorBoardSink

        sinks.append(TensorBoardSink(cfg.log.tensorboard, run_dir, cfg.train.log_every))
    return Sinks(sinks)
