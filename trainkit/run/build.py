"""A run: everything a training needs, built and checked from a config before the run directory is touched,
and the one table of what a checkpoint holds of it (`PARTS`), which both save and restore read."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import trainkit
from trainkit.data import build as data
from trainkit.data import transforms
from trainkit.data.mixing import BatchMix
from trainkit.data.split import stored_split
from trainkit.errors import CheckpointError, ConfigError, RunDirError
from trainkit.models import build as models
from trainkit.models import optim
from trainkit.models import python as python_source
from trainkit.models.ema import EMA
from trainkit.run import checks, config, devices, distributed
from trainkit.run.config import Config
from trainkit.run.finetune import backbone_names
from trainkit.sinks import table as sinks_table
from trainkit.sinks.base import SinkContext, Sinks
from trainkit.store import checkpoint
from trainkit.store.checkpoint import read_checkpoint
from trainkit.store.rundir import RunLock, prepare_run_dir
from trainkit.text import first_line, some


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
    stop_reason: str | None = None  # another reason it stops before train.epochs: run.stopping's NAN, EARLY, PRUNED
    nan_skipped: int = 0  # steps skipped for a non-finite loss (train.on_nan: skip), this epoch
    amp_skipped: int = 0  # steps GradScaler skipped for inf/NaN gradients (fp16), this epoch
    top_k: list[dict] = field(default_factory=list)  # train.save_top_k's files: {"value", "epoch", "file"}
    saved: bool = False  # a checkpoint of this run exists (it was resumed from one, or has written one)
    last_save: float = field(default_factory=time.monotonic)  # when this process last wrote (or took) a checkpoint


@dataclass
class Run:
    cfg: Config
    device: torch.device
    data: data.Data
    model: nn.Module
    net: nn.Module  # what forward calls: the model, or its DDP / compiled form
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler, or None
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    run_dir: Path
    sinks: Sinks
    state: State
    ema: EMA | None = None  # train.ema: the moving average that is evaluated and saved beside the weights
    channels_last: bool = False
    dist: distributed.Dist = field(default_factory=distributed.Dist)
    overwrite: bool = False  # replace the previous run's files at the first checkpoint
    notes: list[str] = field(default_factory=list)  # said once at start
    frozen_norms: list[nn.Module] = field(default_factory=list)  # BatchNorm layers that run in eval mode
    limit_batches: int | None = None  # --fast-dev-run: this many training and val batches of one epoch
    temporary: bool = False  # --fast-dev-run without --run-dir: the run directory is removed after
    backbone: set[str] = field(default_factory=set)  # train.finetune: the parameters frozen at first
    batch_mix: BatchMix = field(default_factory=lambda: BatchMix([], 0, 0, ""))  # data.batch_transforms
    lock: RunLock | None = None  # the run directory's lock, held by the process that writes it (rank 0)
    # after each epoch's checkpoint, a reason to stop now (a sweep's pruner), or None to go on
    epoch_hook: Callable[[dict[str, Any]], str | None] | None = None


# --------------------------------------------------------------------------- what a checkpoint holds


@dataclass(frozen=True)
class Part:
    """One stateful part of a run: how to save it, and how to restore it (from None when an older file lacks it)."""

    key: str
    save: Callable[[Run], Any]
    load: Callable[[Run, Any], None]


def _set(name: str, cast: Callable[[Any], Any] = int, default: Any = 0) -> Callable[[Run, Any], None]:
    return lambda run, v: setattr(run.state, name, cast(v) if v is not None else default)


def _load_optional(attr: str) -> Callable[[Run, Any], None]:
    """Restore a scheduler or an enabled GradScaler when both the run and the checkpoint have one."""

    def load(run: Run, v: Any) -> None:
        obj = getattr(run, attr)
        if obj is not None and v is not None and (attr != "scaler" or obj.is_enabled()):
            obj.load_state_dict(v)

    return load


def _load_ema(run: Run, v: Any) -> None:
    if run.ema is not None:  # a run that had no average starts one from its (restored) weights
        run.ema.load_state_dict(v if v is not None else checkpoint.unwrap(run.model).state_dict())


def _load_best(run: Run, v: dict) -> None:
    run.state.best, run.state.best_epoch = v["value"], v["epoch"]


def _load_early_stopping(run: Run, v: dict) -> None:
    run.state.es_best, run.state.es_bad_epochs = v["best"], v["bad_epochs"]


PARTS: tuple[Part, ...] = (
    Part(
        "model",
        lambda r: checkpoint.unwrap(r.model).state_dict(),
        lambda r, v: checkpoint.load_state(r.model, v, "its model"),
    ),
    Part("optimizer", lambda r: r.optimizer.state_dict(), lambda r, v: r.optimizer.load_state_dict(v)),
    Part(
        "scheduler",
        lambda r: r.scheduler.state_dict() if r.scheduler is not None else None,
        _load_optional("scheduler"),
    ),
    Part("scaler", lambda r: r.scaler.state_dict() if r.scaler.is_enabled() else None, _load_optional("scaler")),
    Part("ema", lambda r: r.ema.state_dict() if r.ema is not None else None, _load_ema),
    Part("epoch", lambda r: r.state.epoch, _set("epoch")),
    Part("batch", lambda r: r.state.batch, _set("batch")),
    Part("step", lambda r: r.state.step, _set("step")),
    # the saved partial epoch is already summed over ranks: only rank 0 carries it on
    Part("partial", lambda r: r.state.partial, lambda r, v: setattr(r.state, "partial", v if r.dist.main else None)),
    Part(
        "best",
        lambda r: {"metric": r.cfg.train.monitor, "value": r.state.best, "epoch": r.state.best_epoch},
        _load_best,
    ),
    Part(
        "early_stopping", lambda r: {"best": r.state.es_best, "bad_epochs": r.state.es_bad_epochs}, _load_early_stopping
    ),
    Part("top_k", lambda r: r.state.top_k, lambda r, v: setattr(r.state, "top_k", list(v or []))),
    Part("rng", lambda r: checkpoint.rng_state(), lambda r, v: checkpoint.set_rng_state(v)),
)


def make_checkpoint(run: Run, epoch_metrics: dict[str, Any]) -> dict[str, Any]:
    """Every part of `PARTS`, and what a checkpoint alone needs to rebuild and describe its model."""
    return {
        "format": checkpoint.FORMAT,
        **{part.key: part.save(run) for part in PARTS},
        "config": config.to_dict(run.cfg),
        "classes": list(run.data.classes),
        "metrics": {
            k: v for k, v in epoch_metrics.items() if isinstance(v, (int, float, str, bool)) or k == "confusion"
        },
        "versions": {"trainkit": trainkit.__version__, "torch": str(torch.__version__)},
        **({"pretrained": named.record()} if (named := run.cfg.model.pretrained_weights) else {}),
        **({"pretrained_categories": named.categories} if named and _keeps_head(run.model, named.categories) else {}),
        **({"model_code": python_source.record(run.cfg.model.net)} if run.cfg.model.source == "python" else {}),
    }


def _keeps_head(model: nn.Module, categories: list[str] | None) -> bool:
    """Whether the model's outputs are the pretrained weights' own classes (`args: {num_classes: 1000}`)."""
    head = checkpoint.head_of(checkpoint.unwrap(model))
    weight = getattr(checkpoint.unwrap(model).get_submodule(head), "weight", None) if head else None
    return bool(categories) and weight is not None and weight.shape[0] == len(categories)  # type: ignore[arg-type]


def restore(run: Run, ckpt: dict[str, Any]) -> None:
    for part in PARTS:  # in table order: the model before the average that may start from it, the RNG last
        part.load(run, ckpt.get(part.key))


def summary_line(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    params = list(model.parameters())
    total, trainable = sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in params) / 1e6
    return f"model: {total:,} parameters ({trainable:,} trainable, {size:.2f} MB), input {list(input_shape)}"


def banner(run: Run) -> list[str]:
    """What a run says at start."""
    cfg, s, d = run.cfg, run.state, run.data
    lines = [
        f"trainkit {trainkit.__version__}: {cfg.name} on {run.device}, {len(d.train_set) if d.train_set else 0} train / "
        f"{len(d.val_set)} val images, {len(d.classes)} classes, "
        + ("a temporary run_dir, removed after" if run.temporary else f"run_dir {run.run_dir}"),
        d.mix_line(),
        summary_line(run.model, d.input_shape),
        *run.notes,
    ]
    if run.frozen_norms:
        lines.append(
            f"model.freeze: {len(run.frozen_norms)} BatchNorm layers are frozen: they keep their running "
            "statistics (eval mode while training)"
        )
    if cfg.train.ema is not None:
        e = cfg.train.ema
        lines.append(
            f"evaluating and saving the moving average of the weights (train.ema: decay {e.decay}, every {e.every})"
        )
    if s.epoch or s.batch:
        lines.append(f"resuming at epoch {s.epoch + 1}, batch {s.batch} (step {s.step})")
    return lines


# --------------------------------------------------------------------------- building a run


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_run(
    cfg: Config,
    resume: str | Path | None = None,
    overwrite: bool = False,
    ckpt: dict[str, Any] | None = None,
    limit_batches: int | None = None,
) -> Run:
    """Build everything and check it before the run directory is touched (on every rank under DDP); `ckpt` is
    the checkpoint at `resume` when the caller has read it already; `limit_batches`: --fast-dev-run's."""
    rank, device = _start(cfg)
    val_limit = limit_batches * cfg.data.eval_batch_size if limit_batches else None
    stored = stored_split(Path(resume).parent) if resume and cfg.data.val_split is not None else None
    d = data.build_data(
        cfg.data, cfg.seed, device, rank=rank.rank, world=rank.world, val_limit=val_limit, stored_split=stored
    )
    notes = list(d.notes)
    model = models.build_model(
        cfg.model,
        seed=cfg.seed,
        notes=notes,
        load_weights=checkpoint.load_weights,
        num_classes=len(d.classes),
        check_file=checkpoint.check_weights_file,
    )
    named = cfg.model.pretrained_weights
    notes += [w for w in [named.normalize_warning(transforms.val_calls(cfg.data))] if w] if named else []
    if cfg.train.check_shapes:
        checks.check_data(cfg, d, model)
    if ckpt is None and resume:
        ckpt = read_checkpoint(resume, resume=True)
    if cfg.model.whiten is not None and ckpt is None:  # a resumed run loads its weights instead
        from trainkit.run.whiten import apply_whitening

        notes.append(apply_whitening(model, cfg.model.whiten, d, cfg.seed))
    if ckpt is not None and ckpt.get("classes") != d.classes:
        theirs, ours = list(ckpt.get("classes") or []), d.classes
        raise ConfigError(
            f"--resume {resume}: the checkpoint's {len(theirs):,} classes ({some(theirs)}) differ from the data's "
            f"{len(ours):,} ({some(ours)})"
        )
    run = _assemble(cfg, rank, device, d, model, notes)
    run.limit_batches = limit_batches
    if ckpt is not None:
        resume_from(run, ckpt, str(resume))
    run.lock = take_run_dir(run.run_dir, rank, resume=ckpt is not None, overwrite=overwrite)
    run.overwrite = overwrite and ckpt is None
    try:
        context = SinkContext(cfg.log, run.run_dir, cfg.visdom_env, cfg.train.log_every, resumed=ckpt is not None)
        run.sinks = sinks_table.build_sinks(context, rank.main)
    except BaseException:
        if run.lock is not None:
            run.lock.abandon()
        raise
    return run


def _start(cfg: Config) -> tuple[distributed.Dist, torch.device]:
    """This process's rank and device, its process group, threads and seeds."""
    rank = distributed.from_env()
    device = devices.select_device(distributed.device_of(cfg.device, rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    distributed.init(rank, device)
    devices.set_threads(cfg.threads)
    devices.keep_freed_memory()
    seed_everything(cfg.seed)
    return rank, device


def _assemble(
    cfg: Config, rank: distributed.Dist, device: torch.device, d: data.Data, model: nn.Module, notes: list[str]
) -> Run:
    """The model on its device and in its memory format, its optimizer, schedule, scaler, loss and wrappers."""
    model.to(device)
    use_channels_last = devices.channels_last(cfg, model)
    if use_channels_last:
        model.to(memory_format=torch.channels_last)
    backbone = backbone_names(model) if cfg.train.finetune else set()
    scale = cfg.train.finetune.unfrozen_lr_scale if cfg.train.finetune else 1.0
    optimizer = optim.build_optimizer(model, cfg.optim, (backbone, scale) if backbone else None)
    for note in (
        optim.horizon_warning(cfg.scheduler, cfg.train.epochs, d.steps_per_epoch),
        optim.one_cycle_note(cfg.optim, cfg.scheduler),
    ):
        notes += [note] if note else []
    net = distributed.wrap(model, rank, device, cfg.train.compile)
    return Run(
        cfg=cfg,
        device=device,
        data=d,
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=optim.build_scheduler(optimizer, cfg.scheduler, d.steps_per_epoch, cfg.train.epochs),
        scaler=torch.amp.GradScaler(device.type, init_scale=cfg.train.fp16_init_scale, enabled=cfg.train.amp == "fp16"),
        loss_fn=optim.build_loss(cfg.train.loss, d.classes).to(device),
        run_dir=cfg.run_path,
        sinks=Sinks([]),
        state=State(),
        ema=EMA(model, cfg.train.ema.decay, cfg.train.ema.every, cfg.train.ema.warmup) if cfg.train.ema else None,
        channels_last=use_channels_last,
        dist=rank,
        notes=notes,
        frozen_norms=models.frozen_norms(model),
        backbone=backbone,
        batch_mix=BatchMix(cfg.data.batch_calls, len(d.classes), cfg.seed, cfg.train.loss.type),
    )


def resume_from(run: Run, ckpt: dict[str, Any], source: str) -> None:
    """Restore every part; a schedule whose length the config changed (train.epochs, its own horizon) is
    rebuilt for the new length at the run's step instead of stepped past its end."""
    built = optim.horizon(run.scheduler.state_dict()) if run.scheduler is not None else None
    run.state.saved = True
    saved = optim.horizon(ckpt.get("scheduler"))  # now: CyclicLR's load_state_dict pops keys of what it is given
    try:
        restore(run, ckpt)
    except CheckpointError as exc:
        raise CheckpointError(f"--resume {source}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"--resume {source}: its saved state does not fit this run: {first_line(exc)}") from None
    cfg = run.cfg
    if built is None or saved is None or cfg.scheduler is None or built == saved:
        return
    done = run.state.step if cfg.scheduler.per_step else run.state.epoch
    run.scheduler, note = optim.rebuilt_scheduler(
        run.optimizer, cfg.scheduler, run.data.steps_per_epoch, cfg.train.epochs, done
    )
    run.notes.append(note)


def take_run_dir(run_dir: Path, rank: distributed.Dist, resume: bool, overwrite: bool) -> RunLock | None:
    """Rank 0 alone locks and checks the run directory; under DDP the other ranks wait for its verdict, so
    every rank ends with the same one line when it is refused."""
    lock, verdict = None, ""
    if rank.main:
        try:
            lock = RunLock(run_dir).acquire()
            prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        except RunDirError as exc:
            if lock is not None:
                lock.abandon()
            lock, verdict = None, str(exc)
    if rank.enabled:
        verdict = distributed.from_rank0(verdict)
    if verdict:
        raise RunDirError(verdict)
    return lock
