"""When a run stops, and what it leaves said about it: early stopping, the run's `status.json` (finished, stopped
and why, failed), written when the run's files are first committed and again when it ends."""

from __future__ import annotations

import datetime
import math
import os
import time
from typing import TYPE_CHECKING, Any

from trainkit.config.train import EarlyStoppingConfig
from trainkit.config.typed import to_dict
from trainkit.store.status import STATUS_FILE, read_status, save_status
from trainkit.text import first_line

if TYPE_CHECKING:
    from trainkit.run.build import Run, State
    from trainkit.store.rundir import RunFiles

NAN = "NaN"  # State.stop_reason of a loss that is no longer finite (train.on_nan: stop)
EARLY = "early stopping"
PRUNED = "pruned"  # a sweep's pruner stopped the trial


def improved(value: float | None, best: float | None, mode: str, delta: float = 0.0) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best + delta if mode == "max" else value < best - delta


def early_stop(es: EarlyStoppingConfig | None, s: State, record: dict[str, Any]) -> bool:
    if es is None or es.monitor not in record:
        return False
    if improved(record[es.monitor], s.es_best, es.mode, es.min_delta):
        s.es_best, s.es_bad_epochs = record[es.monitor], 0
        return False
    s.es_bad_epochs += 1
    return s.es_bad_epochs >= es.patience


class Session:
    """This process's part of the run: when it began, and what the run's earlier sessions had spent."""

    def __init__(self, run: Run) -> None:
        self.run, self.began = run, time.monotonic()
        before = read_status(run.run_dir) if run.state.saved else {}  # a resumed run keeps its start and time
        now = datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")
        self.started = before.get("started", now)
        self.wall_before = float(before.get("wall_s", 0.0) or 0.0)
        self.config = to_dict(run.cfg)

    def status(self, state: str, reason: str | None = None) -> dict[str, Any]:
        s = self.run.state
        out: dict[str, Any] = {"state": state, "epoch": s.epoch, "epochs": self.run.cfg.train.epochs}
        if reason is not None:
            out["reason"] = reason
        if s.batch:
            out["batch"] = s.batch
        wall = self.wall_before + time.monotonic() - self.began
        out |= {"started": self.started, "wall_s": round(wall, 1), "pid": os.getpid()}
        return out | {"config": self.config}  # config.yaml's content as JSON: `trainkit runs` reads it ~20x faster

    def running(self) -> dict[str, str]:
        """The run's files' status.json while it runs (RunFiles writes it at the first checkpoint)."""
        import json

        return {STATUS_FILE: json.dumps(self.status("running"), indent=1) + "\n"}

    def end(self, files: RunFiles, error: BaseException | None = None) -> None:
        """status.json at the end of this session: nothing when the run wrote nothing (its folder is as it was)."""
        if not files.done:
            return
        s = self.run.state
        if s.stop_signal is not None:
            import signal

            state, reason = "stopped", signal.Signals(s.stop_signal).name
        elif s.stop_reason is not None:
            state, reason = "stopped", s.stop_reason
        elif error is not None:
            state, reason = "failed", first_line(error)
        else:
            state, reason = "finished", None
        save_status(self.run.run_dir, self.status(state, reason))
