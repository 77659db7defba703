"""Optimizer with parameter groups, scheduler with warmup, and the loss."""

from __future__ import annotations

import warnings
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from trainkit.config import specs
from trainkit.config.train import SCHEDULER_RATES, LossConfig, OptimConfig, SchedulerConfig
from trainkit.errors import ConfigError
from trainkit.text import suggest


def param_groups(model: nn.Module, cfg: OptimConfig, backbone: tuple[set[str], float] | None = None) -> list[dict]:
    """Trainable parameters in groups: those of `optim.groups` (each parameter in the first group whose
    patterns match its name), and the rest, where biases and normalization weights (ndim <= 1) skip weight
    decay by default. The rest come first, so that group 0 carries optim.lr itself."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model.freeze: every parameter is frozen; nothing is left to train")
    custom: list[dict[str, Any]] = []
    taken: set[str] = set()
    for i, group in enumerate(cfg.groups):
        hits = [(n, p) for n, p in params if n not in taken and any(fnmatchcase(n, pat) for pat in group.patterns)]
        if not hits:
            names = [n for n, _ in params]
            raise ConfigError(
                f"optim.groups[{i}].params: {', '.join(map(repr, group.patterns))} matches no trainable parameter "
                f"left by the groups before it{suggest(group.patterns[0], names)}; the names are like "
                f"{', '.join(names[:4])}{', ...' if len(names) > 4 else ''} (see `trainkit inspect-shapes`)"
            )
        taken.update(n for n, _ in hits)
        custom.append(
            {"params": [p for _, p in hits], "lr": cfg.lr * group.lr_scale, "lr_scale": group.lr_scale, **group.kwargs}
        )
    if backbone is not None:  # train.finetune: the backbone in a group of its own, at its scaled rate
        backbone_set, scale = backbone
        hits = [(n, p) for n, p in params if n in backbone_set and n not in taken]
        taken.update(n for n, _ in hits)
        if hits:
            custom.append({"params": [p for _, p in hits], "lr": cfg.lr * scale, "lr_scale": scale})
    rest = [(n, p) for n, p in params if n not in taken]
    wd = cfg.kwargs.get("weight_decay", 0.0) or 0.0
    default: list[dict[str, Any]]
    if cfg.decay_norm_and_bias or not wd:
        default = [{"params": [p for _, p in rest]}]
    else:
        default = [
            {"params": [p for _, p in rest if p.ndim > 1]},
            {"params": [p for _, p in rest if p.ndim <= 1], "weight_decay": 0.0},
        ]
    return [g for g in default if g["params"]] + custom


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, backbone: tuple[set[str], float] | None = None
) -> torch.optim.Optimizer:
    cls = specs.optimizers()[cfg.type]
    try:
        return cls(param_groups(model, cfg, backbone), lr=cfg.lr, **cfg.kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optim: {cfg.type} rejected its arguments: {exc}") from None


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig | None, steps_per_epoch: int, epochs: int
) -> Any:
    """The configured scheduler, after a linear warmup when `warmup_epochs` > 0.

    It is stepped per step when `cfg.per_step` (OneCycleLR, CyclicLR), else per epoch.
    """
    if cfg is None:
        return None
    cls = specs.schedulers()[cfg.type]
    kwargs = dict(cfg.kwargs)
    if cfg.type in SCHEDULER_RATES:  # optim.lr, unless the schedule names its own
        kwargs.setdefault(SCHEDULER_RATES[cfg.type], optimizer.defaults["lr"])
    if cfg.type == "OneCycleLR" and "total_steps" not in kwargs:
        kwargs.setdefault("epochs", epochs - cfg.warmup_epochs)
        kwargs.setdefault("steps_per_epoch", steps_per_epoch)
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    for key in ("max_lr", "base_lr") if cfg.type in ("OneCycleLR", "CyclicLR") else ():
        if isinstance(kwargs.get(key), (int, float)) and any(sc != 1.0 for sc in scales):  # keep optim.groups' ratios
            kwargs[key] = [kwargs[key] * sc for sc in scales]
    try:
        main = cls(optimizer, **kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"scheduler: {cfg.type} rejected its arguments: {exc}") from None
    if not cfg.warmup_epochs:
        return main
    if cfg.type == "ReduceLROnPlateau":
        raise ConfigError("scheduler.warmup_epochs: not supported with ReduceLROnPlateau; remove it")
    warm_steps = cfg.warmup_epochs * (steps_per_epoch if cfg.per_step else 1)
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warm_steps + 1), total_iters=warm_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warm_steps])


# what a scheduler's state_dict holds of its progress; the rest is its horizon (total_steps, T_max, phases, ...)
_PROGRESS = {"last_epoch", "_step_count", "_is_initial", "_get_lr_called_within_step", "_last_lr", "base_lrs"}


def horizon(state: Any) -> Any:
    """A scheduler's state_dict without its progress: two schedules are the same when their horizons are."""
    if isinstance(state, dict):
        return {k: horizon(v) for k, v in state.items() if k not in _PROGRESS}
    if isinstance(state, (list, tuple)):
        return [horizon(v) for v in state]
    return state


def rebuilt_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, epochs: int, done: int
) -> tuple[Any, str]:
    """The schedule of this config, built afresh and moved `done` steps (or epochs) on, as a fresh run of it
    would stand there; and the line that says so (a resume that changed the schedule's length)."""
    before = current_lr(optimizer)
    for group in optimizer.param_groups:  # start from the configured rates: chainable schedulers read `lr`
        group["lr"] = group.get("initial_lr", group["lr"])
        group.pop("initial_lr", None)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, epochs)
    unit = "step" if cfg.per_step else "epoch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": no step is skipped here
        try:
            for _ in range(done):
                scheduler.step()
        except ValueError:
            raise ConfigError(
                f"train.epochs {epochs}: the run is already at {unit} {done}, past the end of this schedule; "
                "give more epochs"
            ) from None
    return scheduler, (
        f"scheduler: the checkpoint's {cfg.type} was built for another length; rebuilt for this config "
        f"({epochs} epochs) and moved to {unit} {done}, as the new schedule stands there: the learning rate goes "
        f"from {before:.3g} to {current_lr(optimizer):.3g}"
    )


def one_cycle_note(optim_cfg: OptimConfig, cfg: SchedulerConfig | None) -> str | None:
    """OneCycleLR and CyclicLR set the learning rate from their own max_lr: optim.lr is not used."""
    if cfg is None or cfg.type not in SCHEDULER_RATES:
        return None
    key = SCHEDULER_RATES[cfg.type]
    given = cfg.kwargs.get(key)
    if not isinstance(given, (int, float)) or float(given) == optim_cfg.lr:
        return None
    return (
        f"note: optim.lr {optim_cfg.lr:g} is not used: {cfg.type} sets the learning rate from scheduler.{key} "
        f"({given:g}); change scheduler.{key} instead (or drop it: it then defaults to optim.lr)"
    )


def horizon_warning(cfg: SchedulerConfig | None, epochs: int, steps_per_epoch: int) -> str | None:
    """A warning when a schedule ends before the run does (CosineAnnealingLR then rises again)."""
    if cfg is None or cfg.type != "CosineAnnealingLR" or not isinstance(cfg.kwargs.get("T_max"), int):
        return None
    t_max, unit = cfg.kwargs["T_max"], "steps" if cfg.per_step else "epochs"
    per = steps_per_epoch if cfg.per_step else 1
    end = cfg.warmup_epochs * per + t_max  # in the scheduler's own unit
    if end >= epochs * per:
        return None
    at = f"epoch {-(-end // per)}" if cfg.per_step else f"epoch {end}"
    return (
        f"warning: scheduler: CosineAnnealingLR's horizon (T_max {t_max} {unit}) is shorter than train.epochs "
        f"({epochs}): the learning rate reaches its minimum at {at} and rises again; "
        f"set scheduler.T_max to {epochs * per - cfg.warmup_epochs * per}"
    )


def build_loss(cfg: LossConfig, classes: list[str]) -> nn.Module:
    """Any torch.nn loss; `weight` may be a mapping of class name to weight (others 1.0)."""
    kwargs = dict(cfg.kwargs)
    weight = kwargs.get("weight")
    if isinstance(weight, dict):
        for name in weight:
            if name not in classes:
                raise ConfigError(f"train.loss.weight.{name}: no class named {name!r}{suggest(str(name), classes)}")
        kwargs["weight"] = torch.tensor([float(weight.get(c, 1.0)) for c in classes])
    elif isinstance(weight, list):
        if len(weight) != len(classes):
            raise ConfigError(
                f"train.loss.weight: {len(weight)} weights for {len(classes)} classes; give one per class"
            )
        kwargs["weight"] = torch.tensor([float(w) for w in weight])
    try:
        return specs.nn_losses()[cfg.type](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"train.loss: {cfg.type} rejected its arguments: {exc}") from None


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the parameters outside optim.groups (or of the first group, when none are)."""
    groups = optimizer.param_groups
    return float(next((g for g in groups if g.get("lr_scale", 1.0) == 1.0), groups[0])["lr"])
