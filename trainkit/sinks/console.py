"""The console: a tqdm bar per epoch on a terminal, plain lines every N steps otherwise, an epoch line."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from trainkit.sinks.base import Sink, SinkKind
from trainkit.text import fmt_pct, plural


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


SINK = SinkKind(make=lambda c: Console(c.log.progress))
