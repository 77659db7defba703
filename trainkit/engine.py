"""The training loop: `fit`, `train_one_epoch`, `evaluate`. Plain functions, read top to bottom."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import trainkit
from trainkit import checkpoint, config, data, devices, distributed, evaluation, metrics, models, optim, shapes
from trainkit.ema import EMA
from trainkit.errors import ConfigError, TrainingError
from trainkit.loggers import Console, Jsonl, Loggers
from trainkit.metrics import EpochMeters
from trainkit.rundir import RunFiles, prepare_run_dir

# --------------------------------------------------------------------------- setup helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Run `inspect-shapes` before training, so a shape bug costs seconds, not an epoch."""
    report = shapes.collect(model, input_shape)
    if report.failure:
        f = report.failure
        fix = f.fix or f.error
        raise ConfigError(
            f"model: the forward pass fails at {f.row.path} ({f.row.type}) on input {list(f.row.input_shape or [])}: "
            f"{fix}; run `trainkit inspect-shapes --config ...` for the table"
        )


# --------------------------------------------------------------------------- the loop


@dataclass
class State:
    """Everything besides the state_dicts that a resumed run needs."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps
    best: float | None = None
    best_epoch: int | None = None
    es_best: float | None = None
    es_bad_epochs: int = 0
    batch: int = 0  # batches done in epoch `epoch` (0-based), when stopped mid-epoch
    partial: dict | None = None  # that epoch's meters so far
    stop_requested: int | None = None  # a signal this process received
    stop_signal: int | None = None  # the signal the run stops for (agreed by every rank under DDP)
    nan_skipped: int = 0  # steps skipped for a non-finite loss (train.on_nan: skip), this epoch
    amp_skipped: int = 0  # steps GradScaler skipped for inf/NaN gradients (fp16), this epoch


@dataclass
class Run:
    cfg: Any
    device: torch.device
    data: data.Data
    model: nn.Module
    net: nn.Module  # what forward calls: the model, or its compiled form
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    run_dir: Path
    loggers: Loggers
    state: State
    plots: Any = None  # the visdom sink, when enabled (also in `loggers`)
    overwrite: bool = False  # replace the previous run's files at the first checkpoint
    channels_last: bool = False
    dist: distributed.Dist = field(default_factory=distributed.Dist)
    ema: EMA | None = None  # train.ema: the moving average that is evaluated and saved beside the weights


def train_one_epoch(run: Run, epoch: int, start: int = 0, meters: EpochMeters | None = None) -> EpochMeters:
    """Train over epoch `epoch` from batch `start`; returns its meters.

    After SIGINT/SIGTERM it stops at the next optimizer step, with `state.batch` the batches done.
    """
    cfg, s = run.cfg.train, run.state
    run.net.train()
    steps = run.data.steps_per_epoch
    meters = meters or EpochMeters(len(run.data.classes), flush_every=cfg.log_every, confusion=False)
    run.loggers.begin_epoch(epoch + 1, cfg.epochs, steps)
    run.optimizer.zero_grad(set_to_none=True)
    per_step = run.scheduler is not None and run.cfg.scheduler.per_step
    fp16 = run.scaler.is_enabled()
    s.batch = start
    for i, (x, y) in enumerate(run.data.batches(run.data.train_loader, epoch, skip=start), start=start):
        x, y = devices.to_device(x, y, run.device, run.channels_last)
        with devices.autocast(run.device, cfg.amp):
            logits = run.net(x)
            # an empty batch (DDP, on_bad_image: skip, no good image on this rank) adds zero gradients
            loss = run.loss_fn(logits, y) if len(y) else logits.sum() * 0.0
        if cfg.on_nan == "skip" and _any_rank(run, not torch.isfinite(loss)):  # opt-in: one host sync per step
            run.optimizer.zero_grad(set_to_none=True)
            s.nan_skipped += 1
            s.batch = i + 1
            continue
        run.scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0 or i + 1 == steps:
            if cfg.grad_clip is not None:
                run.scaler.unscale_(run.optimizer)
                params = [p for p in run.model.parameters() if p.grad is not None]
                if cfg.grad_clip.max_norm is not None:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip.max_norm, cfg.grad_clip.norm_type)
                else:
                    nn.utils.clip_grad_value_(params, cfg.grad_clip.value)
            scale = run.scaler.get_scale() if fp16 else 0.0
            run.scaler.step(run.optimizer)
            run.scaler.update()
            if fp16 and run.scaler.get_scale() < scale:  # GradScaler found inf/NaN gradients and skipped the step
                s.amp_skipped += 1
            run.optimizer.zero_grad(set_to_none=True)
            s.step += 1
            if run.ema is not None:
                run.ema.update(s.step)
            if per_step:
                run.scheduler.step()
        if len(y):
            meters.add(loss, logits, y)
        s.batch = i + 1
        if s.batch % cfg.log_every == 0 or s.batch == steps:
            stats = meters.summary()
            diverged = bool(stats["samples"]) and not math.isfinite(stats["loss"])
            if cfg.on_nan == "stop" and _any_rank(run, diverged):
                raise TrainingError(
                    f"loss became {stats['loss']} in epoch {epoch + 1} by step {s.batch}; the last good checkpoint "
                    f"({run.run_dir / 'last.pt'}, epoch {s.epoch}) is kept; lower optim.lr, set "
                    "train.grad_clip, or set train.on_nan: skip"
                )
            if stats["samples"]:  # none yet: every batch so far held only unreadable files
                run.loggers.step(epoch + 1, s.batch, steps, stats | {"lr": optim.current_lr(run.optimizer)})
        decided = s.stop_requested
        if run.dist.enabled:  # every rank must stop at the same step: decide together, on the local requests
            check = run.device.type == "cpu" or s.batch % cfg.log_every == 0 or s.batch == steps
            decided = distributed.agreed_signal(s.stop_requested, run.device) if check else None
        if decided is not None and s.batch % cfg.accumulate == 0:
            s.stop_signal = decided
            break
    return meters


def _any_rank(run: Run, flag: bool) -> bool:
    """`flag` of this process, or of any rank under DDP (so that every rank takes the same branch)."""
    return distributed.any_rank(flag, run.device) if run.dist.enabled else flag


def summarize(meters: EpochMeters, run: Run, confusion: bool = False) -> tuple[dict[str, Any], np.ndarray | None]:
    """The meters' summary (and confusion matrix), summed over every rank under DDP."""
    if not run.dist.enabled:
        return meters.summary(), meters.confusion_matrix() if confusion else None
    return metrics.summary_from(reduced_state(meters, run)), (
        distributed.all_sum_array(meters.confusion_matrix(), run.device) if confusion else None
    )


def reduced_state(meters: EpochMeters, run: Run) -> dict[str, Any]:
    """`meters.state()` summed over ranks (rank 0's elapsed time)."""
    st = meters.state()
    if not run.dist.enabled:
        return st
    keys = sorted(st["errors"], key=int)
    sums = distributed.all_sum([st["loss_sum"], st["samples"], *(st["errors"][k] for k in keys)], run.device)
    return {**st, "loss_sum": sums[0], "samples": int(round(sums[1])), "errors": dict(zip(keys, sums[2:]))}


def _improved(value: float, best: float | None, mode: str, delta: float = 0.0) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best + delta if mode == "max" else value < best - delta


def make_checkpoint(run: Run, epoch_metrics: dict[str, Any]) -> dict[str, Any]:
    s = run.state
    return {
        "format": checkpoint.FORMAT,
        "model": checkpoint.unwrap(run.model).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "epoch": s.epoch,
        "batch": s.batch,
        "partial": s.partial,
        "step": s.step,
        "best": {"metric": run.cfg.train.monitor, "value": s.best, "epoch": s.best_epoch},
        "early_stopping": {"best": s.es_best, "bad_epochs": s.es_bad_epochs},
        "rng": checkpoint.rng_state(),
        "config": config.to_dict(run.cfg),
        "classes": list(run.data.classes),
        "metrics": {k: v for k, v in epoch_metrics.items() if isinstance(v, (int, float, str, bool))},
        "versions": {"trainkit": trainkit.__version__, "torch": str(torch.__version__)},
    }


def _restore(run: Run, ckpt: dict) -> None:
    checkpoint.load_state(run.model, ckpt["model"], "--resume")
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scheduler is not None and ckpt.get("scheduler") is not None:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler.is_enabled() and ckpt.get("scaler") is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None:  # a run that had no average starts one from its weights
        run.ema.load_state_dict(ckpt.get("ema") or checkpoint.unwrap(run.model).state_dict())
    s = run.state
    s.epoch, s.step = int(ckpt["epoch"]), int(ckpt["step"])
    s.batch = int(ckpt.get("batch", 0))
    s.partial = ckpt.get("partial") if run.dist.main else None  # the saved partial epoch is already summed over ranks
    s.best, s.best_epoch = ckpt["best"]["value"], ckpt["best"]["epoch"]
    s.es_best, s.es_bad_epochs = ckpt["early_stopping"]["best"], ckpt["early_stopping"]["bad_epochs"]
    checkpoint.set_rng_state(ckpt["rng"])


@contextlib.contextmanager
def _stop_on_signals(state: State):
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


def setup(cfg: Any, resume: str | None = None, overwrite: bool = False, console: Console | None = None) -> Run:
    """Build everything and check it before the run directory is touched (on every rank under DDP)."""
    rank = distributed.from_env()
    device = devices.select_device(distributed.device_of(cfg.device, rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    distributed.init(rank, device)
    seed_everything(cfg.seed)
    d = data.build_data(cfg.data, cfg.seed, device, rank=rank.rank, world=rank.world)
    model = models.build_model(cfg.model, seed=cfg.seed)
    input_shape = data.first_sample_shape(d.val_set, "data.transforms.val")
    d.sample_shape = data.first_sample_shape(d.train_set, "data.transforms.train")
    if cfg.train.check_shapes:
        check_shapes(model, input_shape)
    ckpt = checkpoint.load_checkpoint(resume) if resume else None
    if cfg.model.whiten is not None and ckpt is None:  # a resumed run loads its weights instead
        from trainkit.whiten import apply_whitening

        d.notes.append(apply_whitening(model, cfg.model.whiten, d, cfg.seed))
    if ckpt is not None and ckpt.get("classes") != d.classes:
        raise ConfigError(f"--resume {resume}: the checkpoint's classes {ckpt.get('classes')} differ from the data's")
    run_dir = Path(cfg.run_dir)
    model.to(device)
    use_channels_last = devices.channels_last(cfg, model)
    if use_channels_last:
        model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.train.ema.decay, cfg.train.ema.every, cfg.train.ema.warmup) if cfg.train.ema else None
    optimizer = optim.build_optimizer(model, cfg.optim)
    scheduler = optim.build_scheduler(optimizer, cfg.scheduler, d.steps_per_epoch, cfg.train.epochs)
    scaler = torch.amp.GradScaler(device.type, init_scale=cfg.train.fp16_init_scale, enabled=cfg.train.amp == "fp16")
    loss_fn = optim.build_loss(cfg.train.loss, d.classes).to(device)
    net: nn.Module = model
    if rank.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        net = torch.compile(net)
    if rank.main:
        console = console or Console(cfg.log.progress)
        loggers = Loggers([console, Jsonl(run_dir / "metrics.jsonl")])
    else:  # only rank 0 prints, plots and writes
        loggers = Loggers([Console("off", stream=open(os.devnull, "w"))])  # noqa: SIM115 - lives as long as the run
    run = Run(cfg, device, d, model, net, optimizer, scheduler, scaler, loss_fn, run_dir, loggers, State())
    run.channels_last, run.dist, run.ema = use_channels_last, rank, ema
    if ckpt is not None:
        _restore(run, ckpt)
    prepare_run_dir(run_dir, resume=ckpt is not None, overwrite=overwrite, create=rank.main)
    if rank.enabled:  # every rank has checked the run dir before rank 0 writes to it (else a rank may find it taken)
        distributed.barrier()
    run.overwrite = overwrite and ckpt is None
    if cfg.log.visdom.enabled and rank.main:
        from trainkit.plots import VisdomSink

        warn = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        run.plots = VisdomSink(cfg.log.visdom, cfg.log.visdom.env or cfg.name, resume=ckpt is not None, warn=warn)
        run.loggers.append(run.plots)
    return run


def fit(run: Run) -> dict[str, Any]:
    """Train from where `run.state` stands to `train.epochs`; returns the last epoch's record."""
    cfg, s, console = run.cfg, run.state, run.loggers[0]
    resolved = config.dump_config(cfg)
    fresh = s.epoch == 0 and s.batch == 0
    main = run.dist.main  # under DDP only rank 0 writes
    files = RunFiles(run.run_dir, run.overwrite, resolved, data.sample_grid(run.data) if fresh and main else None)
    if main and not any(run.run_dir.iterdir()):
        files.commit(s.epoch)
    if run.plots is not None:
        run.plots.text(resolved)
        if files.grid is not None:
            run.plots.images(files.grid)
    console.print(
        f"trainkit {trainkit.__version__}: {cfg.name} on {run.device}, {len(run.data.train_set)} train / "
        f"{len(run.data.val_set)} val images, {len(run.data.classes)} classes, run_dir {run.run_dir}"
    )
    console.print(run.data.mix_line())
    for note in run.data.notes:
        console.print(note)
    if run.ema is not None:
        e = cfg.train.ema
        console.print(
            f"evaluating and saving the moving average of the weights (train.ema: decay {e.decay}, every {e.every})"
        )
    if not fresh:
        console.print(f"resuming at epoch {s.epoch + 1}, batch {s.batch} (step {s.step})")
    record: dict[str, Any] = {}
    with _stop_on_signals(s):
        for epoch in range(s.epoch, cfg.train.epochs):
            run.data.skipped = s.nan_skipped = s.amp_skipped = 0
            meters = None
            if s.batch and s.partial:
                meters = EpochMeters(len(run.data.classes), flush_every=cfg.train.log_every, confusion=False)
                meters.restore(s.partial)
            meters = train_one_epoch(run, epoch, s.batch, meters)
            if s.stop_signal is not None:
                s.partial = reduced_state(meters, run)
                if main:
                    files.commit(s.epoch)
                    checkpoint.atomic_save(make_checkpoint(run, {}), run.run_dir / "last.pt")
                break
            s.batch, s.partial = 0, None
            record = _epoch_record(run, epoch, summarize(meters, run)[0])
            s.epoch = epoch + 1
            _step_scheduler(run, record)
            improved = _improved(record.get(cfg.train.monitor), s.best, cfg.train.monitor_mode)
            if improved:
                s.best, s.best_epoch = record[cfg.train.monitor], s.epoch
                record["best"] = True
            stop_early = _early_stop(cfg.train.early_stopping, s, record)
            if main:
                files.commit(s.epoch)
                run.loggers.end_epoch(record)
                ckpt = make_checkpoint(run, record)
                checkpoint.atomic_save(ckpt, run.run_dir / "last.pt")
                if improved:
                    checkpoint.atomic_save(ckpt, run.run_dir / "best.pt")
            if stop_early:
                es = cfg.train.early_stopping
                console.print(f"early stopping: {es.monitor} has not improved for {es.patience} epochs")
                break
    run.loggers.close()
    if s.stop_signal is not None:
        name = signal.Signals(s.stop_signal).name
        console.print(
            f"stopped by {name} in epoch {s.epoch + 1} after batch {s.batch}; last.pt holds that point; "
            f"resume with: trainkit train --resume {run.run_dir / 'last.pt'}"
        )
        raise SystemExit(128 + s.stop_signal)
    if s.best_epoch is not None:
        console.print(f"best {cfg.train.monitor} {s.best:.4f} at epoch {s.best_epoch}: {run.run_dir / 'best.pt'}")
    return record


def _epoch_record(run: Run, epoch: int, train_m: dict[str, Any]) -> dict[str, Any]:
    """The metrics.jsonl line of an epoch: train metrics, and val metrics when it evaluates."""
    cfg, s = run.cfg.train, run.state
    record: dict[str, Any] = {"epoch": epoch + 1, "step": s.step, "lr": optim.current_lr(run.optimizer)}
    record |= {f"train_{k}": v for k, v in train_m.items() if k in ("loss", "acc", "acc5")}
    record |= {"images_per_s": train_m.get("images_per_s", 0.0), "time": train_m["time"]}
    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
        eval_net = run.model if run.dist.enabled else run.net  # no DDP collectives: ranks may hold unequal shares
        if run.ema is not None:
            eval_net = run.ema.module
        batches = run.data.batches(run.data.val_loader, epoch)
        n = len(run.data.classes)
        val_meters = evaluation.evaluate(
            eval_net, batches, run.loss_fn, run.device, n, run.channels_last, run.cfg.train.amp, run.cfg.eval.tta
        )
        val_m, conf = summarize(val_meters, run, confusion=True)
        record |= {f"val_{k}": v for k, v in val_m.items() if k in ("loss", "acc", "acc5")}
        if run.plots is not None:
            run.plots.confusion(conf, run.data.classes)
    bad = run.data.skipped
    if run.dist.enabled:  # each rank counts the files of its own shard
        bad = int(distributed.all_sum([bad], run.device)[0])
    for key, count in (
        ("bad_images", bad),
        ("nan_skipped_steps", s.nan_skipped),
        ("amp_skipped_steps", s.amp_skipped),
    ):
        if count:
            record[key] = count
    return record


def _step_scheduler(run: Run, record: dict[str, Any]) -> None:
    if run.scheduler is None or run.cfg.scheduler.per_step:
        return
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if run.cfg.train.monitor in record:
            run.scheduler.step(record[run.cfg.train.monitor])
    else:
        run.scheduler.step()


def _early_stop(es: Any, s: State, record: dict[str, Any]) -> bool:
    if es is None or es.monitor not in record:
        return False
    if _improved(record[es.monitor], s.es_best, es.mode, es.min_delta):
        s.es_best, s.es_bad_epochs = record[es.monitor], 0
        return False
    s.es_bad_epochs += 1
    return s.es_bad_epochs >= es.patience
