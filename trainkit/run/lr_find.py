"""`trainkit lr-find`: the learning-rate range test (Smith 2015), as fastai's `lr_find` and Lightning's Tuner
run it.

The run the config describes is built as `trainkit train` builds it (model, init, whitening, optimizer,
data order), then trained for `steps` mini-batches while the learning rate grows exponentially from
`start` to `end`; the loss is smoothed (an exponential moving average, debiased) and the test stops when
it diverges (above 4x the best). It runs in its own process and saves no weights, so the next
`trainkit train` starts from the same weights and data order; it writes only `lr_find.csv` and
`lr_find.png` in its folder. The suggestion is the steepest descent of the smoothed loss before its
lowest point.
"""

from __future__ import annotations

import copy
import csv
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainkit.data.loaders import epoch_batches
from trainkit.errors import ConfigError
from trainkit.run import devices
from trainkit.run.build import build_run
from trainkit.run.config import Config
from trainkit.store.files import save_figure, write_atomic

BETA = 0.98  # the smoothing of the loss
DIVERGE = 4.0  # stop once the smoothed loss exceeds this many times its best
SKIP_BEGIN, SKIP_END = 10, 1  # points the suggestion ignores at the start and the end (as Lightning)
CLEAR_FALL = 0.1  # below this fall of the smoothed loss from its start to its lowest, no rate stands out


@dataclass
class Result:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    stopped_early: bool


def fall(smoothed: list[float]) -> float:
    """How far the smoothed loss falls, as a share of where it starts (after the points the suggestion skips)."""
    finite = [v for v in smoothed[SKIP_BEGIN:] if math.isfinite(v)]
    start = smoothed[min(SKIP_BEGIN, len(smoothed) - 1)] if smoothed else math.nan
    if not finite or not math.isfinite(start) or start <= 0:
        return 0.0
    return (start - min(finite)) / start


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float | None:
    """The learning rate where the smoothed loss falls fastest against log10(lr), on the way down to its
    lowest point (a recovery after a spike beyond it is no place to train); None on a flat curve, where the
    steepest point is a dip of noise."""
    if fall(smoothed) < CLEAR_FALL:
        return None
    lowest = int(np.nanargmin(np.asarray(smoothed))) if smoothed else 0
    lo, hi = SKIP_BEGIN, min(len(smoothed) - SKIP_END, lowest + 1)
    if hi - lo < 3:
        lo, hi = 0, len(smoothed)
    if hi - lo < 3:
        return None
    grad = np.gradient(np.asarray(smoothed[lo:hi]), np.log10(np.asarray(lrs[lo:hi])))
    return float(lrs[lo + int(np.argmin(grad))])


def range_test(cfg: Config, start: float, end: float, steps: int) -> Result:
    if not 0 < start < end:
        raise ConfigError(f"lr-find: --start {start:g} must be above 0 and below --end {end:g}")
    if steps < 5:
        raise ConfigError(f"lr-find: --steps {steps}: give at least 5")
    cfg = copy.deepcopy(cfg)
    cfg.log.visdom.enabled = cfg.log.tensorboard.enabled = cfg.log.report = False
    cfg.log.progress = "off"
    with tempfile.TemporaryDirectory(prefix="trainkit-lr-find-") as tmp:
        cfg.run_dir = str(Path(tmp) / "run")  # never written: nothing is saved
        run = build_run(cfg)
    assert run.data.train_loader is not None
    base = [g["lr"] for g in run.optimizer.param_groups]
    ratio = [b / base[0] if base[0] else 1.0 for b in base]  # groups keep their lr ratios (e.g. a slower backbone)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, epoch = 0.0, math.inf, 0
    run.net.train()
    while len(lrs) < steps:
        for x, y in epoch_batches(run.data.train_loader, epoch):
            lr = start * (end / start) ** (len(lrs) / (steps - 1))
            for g, r in zip(run.optimizer.param_groups, ratio):
                g["lr"] = lr * r
            x, y = devices.to_device(x, y, run.device, run.channels_last)
            with devices.autocast(run.device, cfg.train.amp):
                loss = run.loss_fn(run.net(x), y)
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
            value = float(loss.detach())
            avg = BETA * avg + (1 - BETA) * value
            smooth = avg / (1 - BETA ** (len(lrs) + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if not math.isfinite(smooth) or smooth > DIVERGE * best:
                return Result(lrs, losses, smoothed, suggest_lr(lrs[:-1], smoothed[:-1]), True)
            best = min(best, smooth)
            if len(lrs) == steps:
                break
        epoch += 1
    return Result(lrs, losses, smoothed, suggest_lr(lrs, smoothed), False)


def write(result: Result, folder: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "lr_find.csv"
    write_atomic(
        table,
        lambda f: csv.writer(f).writerows(
            [("lr", "loss", "smoothed_loss"), *zip(result.lrs, result.losses, result.smoothed)]
        ),
    )
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="red", ls="--", label=f"suggested lr {result.suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title="learning-rate range test")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.legend()
    ax.grid(alpha=0.3)
    figure = folder / "lr_find.png"
    save_figure(fig, figure)
    plt.close(fig)
    return table, figure
