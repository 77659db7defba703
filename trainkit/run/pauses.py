"""Where the loop pauses or stops: a stop asked by SIGINT/SIGTERM (agreed by every rank under DDP), a loss that
is no longer finite, and the mid-epoch checkpoint of `train.checkpoint_every`, so that a kill -9 (an OOM kill,
a preemption) loses little."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from typing import Any

from trainkit.errors import TrainingError
from trainkit.run import distributed, stopping
from trainkit.run.build import Run, State
from trainkit.run.metrics import EpochMeters


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


def on_any_rank(run: Run, flag: bool) -> bool:
    """`flag` of this process, or of any rank under DDP (so that every rank takes the same branch)."""
    return distributed.any_rank(flag, run.device) if run.dist.enabled else flag


def stop_if_diverged(run: Run, epoch: int, stats: dict[str, Any]) -> None:
    """train.on_nan: stop (the default): a loss that is no longer finite, on any rank, ends the run."""
    s = run.state
    diverged = bool(stats["samples"]) and not math.isfinite(stats["loss"])
    if run.cfg.train.on_nan == "stop" and on_any_rank(run, diverged):
        kept = (
            f"the last good checkpoint ({run.run_dir / 'last.pt'}, epoch {s.epoch}) is kept"
            if s.saved
            else "no checkpoint was saved yet (the run directory is left as it was)"
        )
        s.stop_reason = stopping.NAN
        raise TrainingError(
            f"loss became {stats['loss']} in epoch {epoch + 1} by step {s.batch}; {kept}; lower optim.lr, "
            "set train.grad_clip, or set train.on_nan: skip"
        )
