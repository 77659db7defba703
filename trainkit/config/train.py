"""What a config holds of the training loop: the optim, scheduler, train and eval sections (each builder
package holds its own section, `run.config` the whole `Config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from trainkit.config import specs
from trainkit.errors import check_count, key_error
from trainkit.text import suggest


def _check_class(path: str, what: str, classes: dict[str, Any], name: str, kwargs: dict, skip: int = 0) -> None:
    """`type` names one of `classes`, and the other keys are arguments it accepts."""
    if name not in classes:
        raise key_error(f"{path}.type", f"unknown {what} {name!r}{suggest(name, set(classes))}")
    specs.check_signature(classes[name], [], kwargs, path, skip=skip, typed=True)


@dataclass
class ParamGroupConfig:
    params: Union[str, list[str]] = ""  # glob patterns of parameter names, e.g. "backbone.*" or "*.bias"
    lr_scale: float = 1.0  # this group's learning rate is optim.lr (and the scheduler's) times this
    kwargs: dict[str, Any] = field(default_factory=dict)  # the optimizer's other arguments for this group
    _extra = "kwargs"

    @property
    def patterns(self) -> list[str]:
        return [self.params] if isinstance(self.params, str) else list(self.params)

    def _check(self, path: str) -> None:
        if not self.patterns or not all(self.patterns):
            raise key_error(f"{path}.params", "give a glob pattern of parameter names (or a list), e.g. '*.bias'")
        if not self.lr_scale >= 0 or not math.isfinite(self.lr_scale):
            raise key_error(f"{path}.lr_scale", f"must be a number >= 0, got {self.lr_scale}")
        if "lr" in self.kwargs:
            raise key_error(f"{path}.lr", "give lr_scale (a factor of optim.lr), so that the scheduler scales it too")


@dataclass
class OptimConfig:
    type: str = "SGD"
    lr: float = 0.1
    decay_norm_and_bias: bool = False
    groups: list[ParamGroupConfig] = field(default_factory=list)  # parameters with their own settings
    kwargs: dict[str, Any] = field(default_factory=dict)
    _extra = "kwargs"

    def _check(self, path: str) -> None:
        _check_class(path, "optimizer", specs.optimizers(), self.type, {"lr": self.lr, **self.kwargs}, skip=1)
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise key_error(f"{path}.lr", f"must be a positive number, got {self.lr}")
        for i, group in enumerate(self.groups):
            specs.check_signature(
                specs.optimizers()[self.type], [], group.kwargs, f"{path}.groups[{i}]", skip=1, typed=True
            )


SCHEDULER_RATES = {"OneCycleLR": "max_lr", "CyclicLR": "base_lr"}  # the rate that replaces optim.lr


@dataclass
class SchedulerConfig:
    type: str = "CosineAnnealingLR"
    warmup_epochs: int = 0
    interval: Literal["auto", "epoch", "step"] = "auto"
    kwargs: dict[str, Any] = field(default_factory=dict)
    _extra = "kwargs"

    def _check(self, path: str) -> None:
        supplied = SCHEDULER_RATES.get(self.type)  # defaults to optim.lr (optim.build_scheduler)
        kwargs = ({supplied: 1.0} if supplied else {}) | self.kwargs
        _check_class(path, "scheduler", specs.schedulers(), self.type, kwargs, skip=1)
        if self.warmup_epochs < 0:
            raise key_error(f"{path}.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")

    @property
    def per_step(self) -> bool:
        if self.interval == "auto":
            return self.type in ("OneCycleLR", "CyclicLR")
        return self.interval == "step"


@dataclass
class LossConfig:
    type: str = "CrossEntropyLoss"
    kwargs: dict[str, Any] = field(default_factory=dict)
    _extra = "kwargs"

    def _check(self, path: str) -> None:
        _check_class(path, "loss", specs.nn_losses(), self.type, self.kwargs)
        if "label_smoothing" in self.kwargs:  # torch: a float "in [0.0, 1.0]"
            smoothing = self.kwargs["label_smoothing"]
            number = isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool)
            if not number or not 0.0 <= smoothing <= 1.0:
                raise key_error(f"{path}.label_smoothing", f"must be a number from 0.0 to 1.0, got {smoothing!r}")


@dataclass
class GradClipConfig:
    max_norm: float | None = None
    value: float | None = None
    norm_type: float = 2.0

    def _check(self, path: str) -> None:
        if (self.max_norm is None) == (self.value is None):
            raise key_error(path, "give exactly one of max_norm or value")
        for name in ("max_norm", "value"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise key_error(f"{path}.{name}", f"must be > 0, got {v}")


@dataclass
class EmaConfig:
    decay: float = 0.999  # per update; the average's horizon is about 1 / (1 - decay) updates
    every: int = 1  # optimizer steps between updates
    warmup: bool = True  # decay min(decay, (1 + t) / (10 + t)) at step t, as timm

    def _check(self, path: str) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise key_error(f"{path}.decay", f"must be in [0, 1), got {self.decay}")
        if self.every < 1:
            raise key_error(f"{path}.every", f"must be a positive integer, got {self.every}")


@dataclass
class FinetuneConfig:
    """fastai's `fine_tune`, Lightning's `BackboneFinetuning`: the new head alone for `frozen_epochs`, then the
    whole model, the backbone (all but the final classifier) at optim.lr * `unfrozen_lr_scale`."""

    frozen_epochs: int = 1
    unfrozen_lr_scale: float = 0.1

    def _check(self, path: str) -> None:
        if self.frozen_epochs < 1:
            raise key_error(f"{path}.frozen_epochs", f"must be a positive number of epochs, got {self.frozen_epochs}")
        check_count(self.frozen_epochs, f"{path}.frozen_epochs")
        if not 0 < self.unfrozen_lr_scale <= 1e6 or not math.isfinite(self.unfrozen_lr_scale):
            raise key_error(f"{path}.unfrozen_lr_scale", f"must be a positive number, got {self.unfrozen_lr_scale}")


@dataclass
class CheckpointEveryConfig:
    """A mid-epoch last.pt, so that a kill -9 (OOM, preemption) loses at most this much: every `steps`
    optimizer steps, or `minutes` since the last checkpoint, whichever comes first."""

    steps: int | None = None
    minutes: float | None = 10.0

    def _check(self, path: str) -> None:
        if self.steps is not None and self.steps < 1:
            raise key_error(f"{path}.steps", f"must be a positive integer, got {self.steps}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise key_error(f"{path}.minutes", f"must be a positive number of minutes, got {self.minutes}")


METRICS = ("val_acc", "val_acc5", "val_loss", "train_acc", "train_loss")


@dataclass
class EarlyStoppingConfig:
    monitor: Literal[METRICS] = "val_acc"  # type: ignore[valid-type]
    mode: Literal["max", "min"] = "max"
    patience: int = 5
    min_delta: float = 0.0

    def _check(self, path: str) -> None:
        if self.patience < 1:
            raise key_error(f"{path}.patience", f"must be a positive integer, got {self.patience}")


@dataclass
class TrainConfig:
    epochs: int = 10
    loss: LossConfig = field(default_factory=LossConfig)
    amp: Literal["off", "bf16", "fp16"] = "off"
    fp16_init_scale: float = 65536.0  # GradScaler's starting loss scale under amp: fp16
    channels_last: Union[bool, Literal["auto"]] = "auto"
    compile: bool = False
    grad_clip: GradClipConfig | None = None
    ema: EmaConfig | None = None  # evaluate and save an exponential moving average of the weights
    accumulate: int = 1
    early_stopping: EarlyStoppingConfig | None = None
    eval_every: int = 1
    monitor: Literal[METRICS] = "val_acc"  # type: ignore[valid-type]
    monitor_mode: Literal["max", "min"] = "max"
    log_every: int = 50
    on_nan: Literal["stop", "skip"] = "stop"
    check_shapes: bool = True
    save_top_k: int = 1  # 1: best.pt; k > 1 also keeps the k best as epoch=NNN-<monitor>=V.pt; -1 all; 0 none
    # null: only at the end of each epoch (and on SIGINT/SIGTERM)
    checkpoint_every: CheckpointEveryConfig | None = field(default_factory=CheckpointEveryConfig)
    finetune: FinetuneConfig | None = None  # the head alone first, then everything (run.finetune)

    def _check(self, path: str) -> None:
        if not self.fp16_init_scale > 0 or not math.isfinite(self.fp16_init_scale):
            raise key_error(f"{path}.fp16_init_scale", f"must be a positive number, got {self.fp16_init_scale}")
        if self.save_top_k < -1:
            raise key_error(
                f"{path}.save_top_k", f"must be -1 (all), 0 (none) or a positive count, got {self.save_top_k}"
            )
        for name in ("epochs", "accumulate", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise key_error(f"{path}.{name}", f"must be a positive integer, got {getattr(self, name)}")
            check_count(getattr(self, name), f"{path}.{name}")


@dataclass
class EvalConfig:
    tta: Literal["off", "flip", "flip_translate"] = "off"  # test-time augmentation, in training's evaluations too
