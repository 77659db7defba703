"""Where the loop pauses: a stop asked by SIGINT/SIGTERM (agreed by every rank under DDP), and the mid-epoch
checkpoint of `train.checkpoint_every`, so that a kill -9 (an OOM kill, a preemption) loses little."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from trainkit import distributed
from trainkit.metrics import EpochMeters
from trainkit.run import Run, State


def after_batch(run: Run, steps: int, meters: EpochMeters, save_partial: Callable[[EpochMeters], None] | None) -> bool:
    """Between two batches: stop on an agreed signal (True), or write a mid-epoch checkpoint when one is due.
    Both wait for an optimizer step's end (train.accumulate); every rank decides the same way."""
    cfg, s = run.cfg.train, run.state
    decided, check = s.stop_requested, True
    if run.dist.enabled:  # every rank must stop at the same step: decide together, on the local requests
        check = run.device.type == "cpu" or s.batch % cfg.log_every == 0 or s.batch == steps
        decided = distributed.agreed_signal(s.stop_requested, run.device) if check else None
    boundary = s.batch % cfg.accumulate == 0
    if decided is not None and boundary:
        s.stop_signal = decided
        return True
    if s.batch == steps:  # the epoch's end, or --fast-dev-run's: its own checkpoint follows
        return True
    if save_partial is not None and boundary and check and checkpoint_due(run):
        save_partial(meters)
    return False


def checkpoint_due(run: Run) -> bool:
    """train.checkpoint_every: every N optimizer steps, or M minutes since the last checkpoint (rank 0's clock
    is not the others': under DDP a rank that finds it due tells them all)."""
    every, s = run.cfg.train.checkpoint_every, run.state
    if every is None:
        return False
    due = every.steps is not None and s.step > 0 and s.step % every.steps == 0
    if every.minutes is not None:
        late = time.monotonic() - s.last_save >= every.minutes * 60
        due = due or (distributed.any_rank(late, run.device) if run.dist.enabled else late)
    return due


@contextlib.contextmanager
def stop_on_signals(state: State):
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second SIGINT aborts at once."""

    def handler(signum: int, frame: Any) -> None:
        if state.stop_requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        state.stop_requested = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
