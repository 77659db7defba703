"""The training loop: `fit` and `train_one_epoch`. Plain functions, read top to bottom.

A `Run` (built by `run.build.build_run`) holds everything; what happens goes to `run.sinks`.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from trainkit.data import build as data
from trainkit.data.loaders import epoch_batches
from trainkit.errors import DataError
from trainkit.models import optim
from trainkit.run import config, devices, distributed, evaluation, finetune, metrics, pauses, stopping
from trainkit.run.build import Run, banner, make_checkpoint
from trainkit.run.metrics import EpochMeters
from trainkit.sinks import table as sinks_table
from trainkit.sinks.base import RunInfo
from trainkit.store import checkpoint
from trainkit.store.rundir import RunFiles, rank_top_k
from trainkit.text import fmt_metric, plural


def train_one_epoch(
    run: Run,
    epoch: int,
    start: int = 0,
    meters: EpochMeters | None = None,
    save_partial: Callable[[EpochMeters], None] | None = None,
) -> EpochMeters:
    """Train over epoch `epoch` from batch `start`; returns its meters.

    After SIGINT/SIGTERM it stops at the next optimizer step, with `state.batch` the batches done. When
    `train.checkpoint_every` is due, `save_partial` writes the epoch so far (a mid-epoch last.pt).
    """
    cfg, s = run.cfg.train, run.state
    run.net.train()
    for norm in run.frozen_norms:  # a frozen BatchNorm keeps its running statistics too
        norm.eval()
    train_loader = run.data.train_loader
    assert train_loader is not None
    steps = train_loader.steps_per_epoch
    if run.limit_batches is not None:
        steps = min(steps, start + run.limit_batches)
    meters = meters or EpochMeters(len(run.data.classes), flush_every=cfg.log_every, confusion=False)
    run.sinks.begin_epoch(epoch + 1, cfg.epochs, steps)
    run.optimizer.zero_grad(set_to_none=True)
    per_step = run.scheduler is not None and run.cfg.scheduler is not None and run.cfg.scheduler.per_step
    s.batch = start
    for i, (x, y) in enumerate(epoch_batches(train_loader, epoch, start), start=start):
        x, y = devices.to_device(x, y, run.device, run.channels_last)
        x, target, y = run.batch_mix(x, y, epoch, i)  # data.batch_transforms: soft targets, and their dominant labels
        with devices.autocast(run.device, cfg.amp):
            logits = run.net(x)
            # an empty batch (DDP, on_bad_image: skip, no good image on this rank) adds zero gradients
            loss = run.loss_fn(logits, target) if len(y) else logits.sum() * 0.0
        if cfg.on_nan == "skip" and pauses.on_any_rank(run, not torch.isfinite(loss)):  # opt-in: one host sync per step
            run.optimizer.zero_grad(set_to_none=True)
            s.nan_skipped += 1
            s.batch = i + 1
            continue
        run.scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0 or i + 1 == steps:
            _optimizer_step(run, per_step)
        if len(y):
            meters.add(loss, logits, y)
        s.batch = i + 1
        if s.batch % cfg.log_every == 0 or s.batch == steps:
            stats = meters.summary()
            pauses.stop_if_diverged(run, epoch, stats)
            if stats["samples"]:  # none yet: every batch so far held only unreadable files
                run.sinks.step(epoch + 1, s.batch, steps, stats | {"lr": optim.current_lr(run.optimizer)})
        if pauses.after_batch(run, steps, meters, save_partial):
            break
    return meters


def _optimizer_step(run: Run, per_step_scheduler: bool) -> None:
    """Clip, step (through the GradScaler), zero the gradients, and move the average and a per-step schedule."""
    s, clip = run.state, run.cfg.train.grad_clip
    if clip is not None:
        run.scaler.unscale_(run.optimizer)
        params = [p for p in run.model.parameters() if p.grad is not None]
        if clip.max_norm is not None:
            nn.utils.clip_grad_norm_(params, clip.max_norm, clip.norm_type)
        elif clip.value is not None:
            nn.utils.clip_grad_value_(params, clip.value)
    fp16 = run.scaler.is_enabled()
    scale = run.scaler.get_scale() if fp16 else 0.0
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if fp16 and run.scaler.get_scale() < scale:  # GradScaler found inf/NaN gradients and skipped the step
        s.amp_skipped += 1
    run.optimizer.zero_grad(set_to_none=True)
    s.step += 1
    if run.ema is not None:
        run.ema.update(s.step)
    if per_step_scheduler:
        run.scheduler.step()


def _save(run: Run, files: RunFiles, record: dict[str, Any], best: bool = False) -> None:
    """The run files at the first save, then last.pt, best.pt and the top-k files (train.save_top_k): rank 0."""
    files.commit()
    k = run.cfg.train.save_top_k
    kept: dict[str, Any] | None = None
    dropped: list[dict[str, Any]] = []
    if k not in (0, 1):
        c = run.cfg.train
        run.state.top_k, kept, dropped = rank_top_k(run.state.top_k, record, c.monitor, c.monitor_mode, k)
    ckpt = make_checkpoint(run, record)  # it carries the top-k list as it stands once this save is done
    checkpoint.atomic_save(ckpt, run.run_dir / "last.pt")
    if best and k != 0:
        checkpoint.atomic_save(ckpt, run.run_dir / "best.pt")
    if kept is not None:
        checkpoint.atomic_save(ckpt, run.run_dir / kept["file"])
        for old in dropped:  # only now that the new one is on disk
            (run.run_dir / old["file"]).unlink(missing_ok=True)


def fit(run: Run) -> dict[str, Any]:
    """Train from where `run.state` stands to `train.epochs`; returns the last epoch's record."""
    cfg, s, sinks = run.cfg, run.state, run.sinks
    resolved = config.dump_config(cfg)
    fresh = s.epoch == 0 and s.batch == 0
    main = run.dist.main  # under DDP only rank 0 writes
    grid = data.sample_grid(run.data) if fresh and main else None
    session = stopping.Session(run)
    texts = run.data.run_files() | session.running() if main else {}
    files = RunFiles(run.run_dir, run.overwrite, resolved, grid, s.epoch, run.lock, sinks_table.files(), texts)
    steps = run.data.steps_per_epoch
    sinks.start(
        RunInfo(
            name=cfg.name,
            run_dir=run.run_dir,
            config_text=resolved,
            classes=list(run.data.classes),
            grid=grid,
            resumed=not fresh,
            epochs=cfg.train.epochs,
            steps_per_epoch=steps,
            done_epochs=s.epoch,
            done_steps=s.epoch * steps + s.batch,
        )
    )
    for line in banner(run):
        sinks.message(line)
    record: dict[str, Any] = {}
    try:
        with pauses.stop_on_signals(s):
            record = _epochs(run, files)
    except BaseException as exc:
        if main:
            session.end(files, exc)  # before the sinks close: they may read how the run ended
            sinks.close()
            files.discard()
        raise
    if main:
        session.end(files)
    sinks.close()
    if s.stop_signal is not None:
        name = signal.Signals(s.stop_signal).name
        sinks.message(
            f"stopped by {name} in epoch {s.epoch + 1} after batch {s.batch}; last.pt holds that point; "
            f"resume with: trainkit train --resume {run.run_dir / 'last.pt'}"
        )
        raise SystemExit(128 + s.stop_signal)
    if s.best_epoch is not None and run.limit_batches is None:  # a smoke run's "best" says nothing
        best = fmt_metric(cfg.train.monitor, s.best)
        sinks.message(f"best {cfg.train.monitor} {best} at epoch {s.best_epoch}: {run.run_dir / 'best.pt'}")
    return record


def _epochs(run: Run, files: RunFiles) -> dict[str, Any]:
    """Epochs from where `run.state` stands; returns the last epoch's record."""
    cfg, s, sinks, main = run.cfg, run.state, run.sinks, run.dist.main
    record: dict[str, Any] = {}
    for epoch in range(s.epoch, cfg.train.epochs):
        run.data.bad.take()
        finetune.apply_phase(run, epoch)
        s.nan_skipped = s.amp_skipped = 0
        meters = None
        if s.batch and s.partial:
            meters = EpochMeters(len(run.data.classes), flush_every=cfg.train.log_every, confusion=False)
            meters.restore(s.partial)

        def save_partial(meters: EpochMeters) -> None:  # the epoch so far: its batches, its meters summed
            s.partial = metrics.reduced_state(meters, run.dist, run.device)
            if main:
                _save(run, files, {})
            s.last_save, s.saved = time.monotonic(), True

        meters = train_one_epoch(run, epoch, s.batch, meters, save_partial)
        if s.stop_signal is not None:
            save_partial(meters)
            break
        s.batch, s.partial = 0, None
        record, conf = _epoch_record(run, epoch, metrics.summarize(meters, run.dist, run.device)[0])
        s.epoch = epoch + 1
        _step_scheduler(run, record)
        smoke = run.limit_batches is not None
        improved = not smoke and stopping.improved(record.get(cfg.train.monitor), s.best, cfg.train.monitor_mode)
        if improved:
            s.best, s.best_epoch = record[cfg.train.monitor], s.epoch
            record["best"] = True
        stop_early = stopping.early_stop(cfg.train.early_stopping, s, record)
        if main:
            files.commit()
            sinks.end_epoch(record, conf)
            kept = record if conf is None else record | {"confusion": conf.tolist()}  # for `trainkit plot`
            _save(run, files, kept, best=improved)
        s.last_save, s.saved = time.monotonic(), True
        if stop_early and cfg.train.early_stopping is not None:
            es = cfg.train.early_stopping
            sinks.message(f"early stopping: {es.monitor} has not improved for {es.patience} epochs")
            s.stop_reason = stopping.EARLY
            break
        if run.epoch_hook is not None and (why := run.epoch_hook(record)) is not None:
            sinks.message(f"stopped at epoch {s.epoch}: {why}")
            s.stop_reason = why
            break
    return record


def _epoch_record(run: Run, epoch: int, train_m: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray | None]:
    """The metrics.jsonl line of an epoch (its val metrics when it evaluates), and the val confusion matrix then."""
    cfg, s = run.cfg.train, run.state
    record: dict[str, Any] = {"epoch": epoch + 1, "step": s.step, "lr": optim.current_lr(run.optimizer)}
    record |= {f"train_{k}": v for k, v in train_m.items() if k in ("loss", "acc", "acc5")}
    record |= {"images_per_s": train_m.get("images_per_s", 0.0), "time": train_m["time"]}
    record |= finetune.phase_record(run, epoch)
    conf = None
    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
        eval_net = run.model if run.dist.enabled else run.net  # no DDP collectives: ranks may hold unequal shares
        if run.ema is not None:
            eval_net = run.ema.module
        batches = itertools.islice(epoch_batches(run.data.val_loader, epoch), run.limit_batches)
        n = len(run.data.classes)
        val_meters = evaluation.evaluate(
            eval_net, batches, run.loss_fn, run.device, n, run.channels_last, run.cfg.train.amp, run.cfg.eval.tta
        )
        val_m, conf = metrics.summarize(val_meters, run.dist, run.device, confusion=True)
        record |= {f"val_{k}": v for k, v in val_m.items() if k in ("loss", "acc", "acc5")}
    bad, new = run.data.bad.take()
    if new:
        what = plural(len(new), "image that failed", "images that failed")
        run.sinks.message(f"skipped {what} to decode: {', '.join(new[:5])}")
    if run.dist.enabled:  # each rank counts the files of its own shard
        bad = int(distributed.all_sum([bad], run.device)[0])
    _check_bad_share(run, epoch, bad, int(train_m.get("samples", 0)))
    for key, count in (
        ("bad_images", bad),
        ("nan_skipped_steps", s.nan_skipped),
        ("amp_skipped_steps", s.amp_skipped),
    ):
        if count:
            record[key] = count
    return record, conf


def _check_bad_share(run: Run, epoch: int, bad: int, good: int) -> None:
    """An epoch that trained on no image, or on fewer than data.max_bad_fraction of them, is an error (the data
    went away or rotted mid-run): one line, and the last checkpoint is kept."""
    limit = run.cfg.data.max_bad_fraction
    if bad and (not good or bad / (bad + good) > limit):
        kept = f"{run.run_dir / 'last.pt'} (epoch {run.state.epoch}) is kept" if run.state.saved else "none was saved"
        raise DataError(
            f"epoch {epoch + 1}: {plural(bad, 'image')} of {bad + good:,} could not be decoded (more than "
            f"data.max_bad_fraction {limit:g}); the last checkpoint, {kept}; check data.train"
        )


def _step_scheduler(run: Run, record: dict[str, Any]) -> None:
    if run.scheduler is None or run.cfg.scheduler is None or run.cfg.scheduler.per_step:
        return
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if run.cfg.train.monitor in record:
            run.scheduler.step(record[run.cfg.train.monitor])
    else:
        run.scheduler.step()
