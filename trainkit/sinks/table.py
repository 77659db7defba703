"""The table of sinks: a name for each, and the module that makes it. A new sink is one module and one line.

`build` makes a run's sinks in this order (the console first: it speaks for the others).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from trainkit.sinks import console, csv, jsonl, mlflow, tensorboard, visdom
from trainkit.sinks.base import Sink, SinkContext, SinkKind, Sinks
from trainkit.sinks.schema import LogConfig

SINKS: dict[str, SinkKind] = {
    "console": console.SINK,
    "jsonl": jsonl.SINK,
    "csv": csv.SINK,
    "visdom": visdom.SINK,
    "tensorboard": tensorboard.SINK,
    "mlflow": mlflow.SINK,
}


def build_sinks(ctx: SinkContext, main: bool) -> Sinks:
    """The sinks of a run: none but on rank 0 (only it prints, plots and writes)."""
    if not main:
        return Sinks([])
    made: list[Sink] = []
    ctx = dataclasses.replace(ctx, say=lambda text: made[0].message(text))  # the console (its bar, --quiet)
    for kind in SINKS.values():
        sink = kind.make(ctx)
        if sink is not None:
            made.append(sink)
    return Sinks(made)


def files() -> tuple[str, ...]:
    """What the sinks write in a run directory, beside the run's own files."""
    return tuple(name for kind in SINKS.values() for name in kind.files)


def finish_run(log: LogConfig, run_dir: Path) -> None:
    """Tell the sinks that the files written after a run's loop (report, test.json, eval.json) are there."""
    for kind in SINKS.values():
        if kind.finish is not None:
            kind.finish(log, run_dir)
