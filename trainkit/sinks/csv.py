"""metrics.csv: a row per epoch, a column per metric, as Lightning's CSVLogger writes it.

The whole file is rewritten (atomically) at each epoch's end, so a column that first appears later (val
metrics on an `eval.every` epoch) gets its header, and a resumed run's file holds exactly the epochs of
metrics.jsonl: the records up to its checkpoint, then the new ones.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from trainkit.sinks.base import RunInfo, Sink, SinkContext, SinkKind
from trainkit.store.files import write_text_atomic
from trainkit.store.rundir import read_jsonl

NAME = "metrics.csv"


def cell(value: Any) -> Any:
    """A value as one CSV cell: numbers and text as they are, lists and mappings as JSON."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def as_csv(records: list[dict[str, Any]]) -> str:
    """The records as CSV: the columns in the order they first appear, an empty cell where one is missing."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: cell(v) for k, v in r.items()} for r in records)
    return out.getvalue()


class Csv(Sink):
    def __init__(self, ctx: SinkContext) -> None:
        self.path = ctx.run_dir / NAME
        self.records: list[dict[str, Any]] = []

    def start(self, info: RunInfo) -> None:
        if info.resumed:  # the epochs the checkpoint has seen, as metrics.jsonl holds them
            self.records = [
                r for r in read_jsonl(info.run_dir / "metrics.jsonl") if r.get("epoch", 0) <= info.done_epochs
            ]

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        self.records.append(record)
        write_text_atomic(self.path, as_csv(self.records))


SINK = SinkKind(make=lambda c: Csv(c) if c.log.csv else None, files=(NAME,))
