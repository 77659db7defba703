"""Where metrics go: the console (tqdm or plain lines) and metrics.jsonl.

Every sink has the same four methods; the engine calls them directly through
`Loggers`, a plain list, so adding a sink never touches the loop.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm


def _columns() -> int:
    """The width of the terminal on stderr: 0 when there is none (or the --nproc launcher's terminal, via a pipe)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return int(os.environ.get("TRAINKIT_TERMINAL_COLUMNS", "0") or 0)


def fmt_pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


class Console:
    """A tqdm bar per epoch on a terminal, plain lines every N steps otherwise; a summary line per epoch."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        if mode == "auto":  # a bar on a terminal that has a width (tqdm draws nothing in 0 columns)
            mode = "bar" if _columns() > 0 else "lines"
        self.mode = mode
        self.bar: tqdm | None = None
        self.epochs = 0

    def print(self, text: str) -> None:
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
            self.print(f"epoch {epoch}/{self.epochs} step {step}/{steps} {text}")

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.mode == "off":
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
            parts.append(f"skipped {record['bad_images']} bad images")
        print(" | ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Jsonl:
    """One JSON line per epoch in metrics.jsonl, flushed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        pass

    def end_epoch(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

    def close(self) -> None:
        pass


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (from a kill) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def truncate_jsonl(path: Path, epochs: int) -> None:
    """Keep the records of the first `epochs` epochs: the ones a resumed checkpoint has seen."""
    kept = [r for r in read_jsonl(path) if r.get("epoch", 0) <= epochs]
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


class Loggers(list):
    """Fan-out to every sink."""

    def begin_epoch(self, *args: Any) -> None:
        for sink in self:
            sink.begin_epoch(*args)

    def step(self, *args: Any) -> None:
        for sink in self:
            sink.step(*args)

    def end_epoch(self, record: dict[str, Any]) -> None:
        for sink in self:
            sink.end_epoch(record)

    def close(self) -> None:
        for sink in self:
            sink.close()


def format_eval(result: dict[str, Any]) -> str:
    """The eval report: summary, per-class table, confusion matrix with class names, top confusions."""
    classes = result["classes"]
    tta = result.get("tta", "off")
    lines = [
        f"checkpoint {result['checkpoint']} (epoch {result['epoch']}), {result['samples']} images"
        + (f", test-time augmentation: {tta}" if tta != "off" else "")
        + (", the moving average of the weights (train.ema)" if result.get("weights") == "ema" else "")
    ]
    lines.append(
        f"loss {result['val_loss']:.4f}  top-1 {fmt_pct(result['val_acc'])}  top-5 {fmt_pct(result.get('val_acc5'))}"
    )
    width = max(len(c) for c in classes + ["class"])
    lines.append("")
    lines.append(f"{'class'.ljust(width)}  accuracy  precision  recall   support")
    for c in classes:
        m = result["per_class"][c]
        lines.append(
            f"{c.ljust(width)}  {fmt_pct(m['accuracy']):>8}  {fmt_pct(m['precision']):>9}  "
            f"{fmt_pct(m['recall']):>7}  {m['support']:>7}"
        )
    conf = result["confusion"]
    cell = max(5, max(len(str(v)) for row in conf for v in row) + 1)
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    lines.append(" " * width + "".join(c[: cell - 1].rjust(cell) for c in classes))
    for c, row in zip(classes, conf):
        lines.append(c.ljust(width) + "".join(str(v).rjust(cell) for v in row))
    lines.append("")
    pairs = result["most_confused"]
    lines.append("most confused pairs (true -> predicted):" + ("" if pairs else " none"))
    lines += [f"  {p['true']} -> {p['predicted']}: {p['count']}" for p in pairs]
    return "\n".join(lines)
