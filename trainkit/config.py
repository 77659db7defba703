"""YAML config in, validated dataclasses out.

`load_config(path, overrides)` is the only entry point the rest of trainkit
needs. Every check lives here: later modules receive typed objects and never
re-validate. A `ConfigError` names the key path, what was expected and what was
given, and where the key came from (file and line, or the `--set` flag).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from trainkit import specs
from trainkit.errors import ConfigError
from trainkit.specs import Call, describe, key_error, printable, suggest
from trainkit.yamlio import parse_yaml

# --------------------------------------------------------------------------- schema


@dataclass
class SamplerConfig:
    type: Literal["random", "sequential", "weighted"] = "random"
    class_weights: Union[Literal["balanced"], dict[str, float]] = "balanced"
    num_samples: int | None = None
    replacement: bool = True

    @staticmethod
    def _shorthand(raw: Any) -> Any:
        return {"type": raw} if isinstance(raw, str) else raw

    def _check(self, path: str) -> None:
        if self.num_samples is not None and self.num_samples < 1:
            raise key_error(f"{path}.num_samples", f"must be a positive integer, got {self.num_samples}")
        if isinstance(self.class_weights, dict):
            for name, w in self.class_weights.items():
                if w < 0:
                    raise key_error(f"{path}.class_weights.{name}", f"weight must be >= 0, got {w}")


@dataclass
class TransformsConfig:
    train: list[Any] = field(default_factory=list)
    val: list[Any] | None = None
    train_calls: list[Call] = field(init=False, default_factory=list)
    val_calls: list[Call] | None = field(init=False, default=None)

    def _check(self, path: str) -> None:
        names = specs.transforms()
        self.train_calls = [
            specs.parse_call(t, f"{path}.train[{i}]", names, "transform") for i, t in enumerate(self.train)
        ]
        if self.val is not None:
            self.val_calls = [
                specs.parse_call(t, f"{path}.val[{i}]", names, "transform") for i, t in enumerate(self.val)
            ]


@dataclass
class DataConfig:
    dataset: Literal["imagefolder", "cifar10", "cifar100"] = "imagefolder"
    train: str | None = None
    val: str | None = None
    root: str | None = None
    download: bool = False
    batch_size: int = 128
    val_batch_size: int | None = None
    num_workers: int = 2
    pin_memory: bool | None = None
    persistent_workers: bool = False
    drop_last: bool = False
    prefetch_factor: int | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    transforms: TransformsConfig = field(default_factory=TransformsConfig)
    on_bad_image: Literal["error", "skip"] = "error"
    cache: Literal["none", "memory", "disk"] = "none"
    cache_dir: str | None = None
    subset: int | None = None

    def _check(self, path: str) -> None:
        for name in ("batch_size", "val_batch_size", "prefetch_factor", "subset"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise key_error(f"{path}.{name}", f"must be a positive integer, got {value}")
        if self.num_workers < 0:
            raise key_error(f"{path}.num_workers", f"must be >= 0, got {self.num_workers}")
        if self.prefetch_factor is not None and self.num_workers == 0:
            raise key_error(f"{path}.prefetch_factor", "needs num_workers > 0")
        if self.dataset == "imagefolder":
            for name in ("train", "val"):
                if getattr(self, name) is None:
                    raise key_error(
                        f"{path}.{name}", "required for dataset imagefolder: a folder with one sub-folder per class"
                    )
        elif self.root is None:
            raise key_error(
                f"{path}.root", f"required for dataset {self.dataset}: the folder that holds the extracted archive"
            )


@dataclass
class InitConfig:
    """Per layer type: an initializer for `weight` and one for `bias`."""

    weight: Any = None
    bias: Any = None
    calls: dict[str, Call] = field(init=False, default_factory=dict)

    def _check(self, path: str) -> None:
        names = specs.initializers()
        for param in ("weight", "bias"):
            raw = getattr(self, param)
            if raw is not None:
                self.calls[param] = specs.parse_call(raw, f"{path}.{param}", names, "initializer", skip=1)


@dataclass
class ModelConfig:
    sequential: Union[list[Any], dict[str, Any], None] = None
    moduledict: dict[str, Any] | None = None
    forward: list[str] | None = None
    torchvision: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    init: dict[str, InitConfig] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)
    replace: dict[str, Any] = field(default_factory=dict)
    net: Any = field(init=False, default=None)
    replacements: dict[str, Any] = field(init=False, default_factory=dict)

    def _check(self, path: str) -> None:
        from trainkit import models

        given = [k for k in ("sequential", "moduledict", "torchvision") if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise key_error(path, f"give exactly one of sequential, moduledict or torchvision (got {what})")
        if self.forward is not None and self.moduledict is None:
            raise key_error(f"{path}.forward", "only applies to model.moduledict")
        if self.sequential is not None:
            self.net = models.parse_sequential(self.sequential, f"{path}.sequential")
        elif self.moduledict is not None:
            self.net = models.parse_moduledict(self.moduledict, self.forward, path)
        else:
            models.check_torchvision(self.torchvision, self.args, path)
        layers = specs.nn_layers()
        for name in self.init:
            if name not in layers:
                raise key_error(f"{path}.init.{name}", f"unknown layer type{suggest(name, set(layers))}")
        self.replacements = {
            name: models.parse_node(raw, f"{path}.replace.{name}") for name, raw in self.replace.items()
        }


def _check_class(path: str, what: str, classes: dict[str, Any], name: str, kwargs: dict, skip: int = 0) -> None:
    """`type` names one of `classes`, and the other keys are arguments it accepts."""
    if name not in classes:
        raise key_error(f"{path}.type", f"unknown {what} {name!r}{suggest(name, set(classes))}")
    specs.check_signature(classes[name], [], kwargs, path, skip=skip)


@dataclass
class OptimConfig:
    type: str = "SGD"
    lr: float = 0.1
    decay_norm_and_bias: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)
    _extra = "kwargs"

    def _check(self, path: str) -> None:
        _check_class(path, "optimizer", specs.optimizers(), self.type, {"lr": self.lr, **self.kwargs}, skip=1)
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise key_error(f"{path}.lr", f"must be a positive number, got {self.lr}")


@dataclass
class SchedulerConfig:
    type: str = "CosineAnnealingLR"
    warmup_epochs: int = 0
    interval: Literal["auto", "epoch", "step"] = "auto"
    kwargs: dict[str, Any] = field(default_factory=dict)
    _extra = "kwargs"

    def _check(self, path: str) -> None:
        _check_class(path, "scheduler", specs.schedulers(), self.type, self.kwargs, skip=1)
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
    accumulate: int = 1
    early_stopping: EarlyStoppingConfig | None = None
    eval_every: int = 1
    monitor: Literal[METRICS] = "val_acc"  # type: ignore[valid-type]
    monitor_mode: Literal["max", "min"] = "max"
    log_every: int = 50
    on_nan: Literal["stop", "skip"] = "stop"
    check_shapes: bool = True

    def _check(self, path: str) -> None:
        if not self.fp16_init_scale > 0 or not math.isfinite(self.fp16_init_scale):
            raise key_error(f"{path}.fp16_init_scale", f"must be a positive number, got {self.fp16_init_scale}")
        for name in ("epochs", "accumulate", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise key_error(f"{path}.{name}", f"must be a positive integer, got {getattr(self, name)}")


@dataclass
class EvalConfig:
    tta: Literal["off", "flip", "flip_translate"] = "off"  # test-time augmentation, in training's evaluations too


@dataclass
class VisdomConfig:
    enabled: bool = True
    server: str = "http://localhost"
    port: int = 8097
    env: str | None = None
    log_every: int = 50


@dataclass
class LogConfig:
    visdom: VisdomConfig = field(default_factory=VisdomConfig)
    progress: Literal["auto", "bar", "lines", "off"] = "auto"


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    device: str = "auto"
    run_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def _check(self, path: str) -> None:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise key_error("device", f"expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not re.fullmatch(r"[\w.-]+", self.name):
            raise key_error("name", f"use letters, digits, '.', '_' and '-' only, got {self.name!r}")
        if self.run_dir is None:
            self.run_dir = f"runs/{self.name}"


# --------------------------------------------------------------------------- validation


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _expected(hint: Any) -> str:
    if hint is Any:
        return "any value"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


def _matches_kind(value: Any, hint: Any) -> bool:
    """Whether `value` has the shape `hint` asks for, so its own error is the useful one."""
    if dataclasses.is_dataclass(hint) or get_origin(hint) is dict:
        return isinstance(value, dict)
    if get_origin(hint) is list:
        return isinstance(value, list)
    return False


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin in (Union, types.UnionType):
        arms = get_args(hint)
        if value is None and type(None) in arms:
            return None
        kind_error = None
        for arm in arms:
            try:
                return _coerce(value, arm, path)
            except ConfigError as exc:
                if kind_error is None and _matches_kind(value, arm):
                    kind_error = exc
        if kind_error is not None:
            raise kind_error
    elif origin is Literal:
        if isinstance(value, bool) and ("off" if value is False else "on") in get_args(hint):
            return "off" if value is False else "on"  # YAML 1.1 reads a bare `off` as false
        if any(value == a and type(value) is type(a) for a in get_args(hint)):
            return value
    elif origin is list:
        if isinstance(value, list):
            (item,) = get_args(hint)
            return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            _, item = get_args(hint)
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise key_error(path, f"keys must be strings, got {describe(k)}")
                out[k] = _coerce(v, item, _join(path, k))
            return out
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is type(None):
        if value is None:
            return None
    raise key_error(path, f"expected {_expected(hint)}, got {describe(value)}")


def _build(cls: type, raw: Any, path: str) -> Any:
    shorthand = getattr(cls, "_shorthand", None)
    if shorthand is not None:
        raw = shorthand(raw)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise key_error(path, f"expected a mapping, got {describe(raw)}")
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    extra_field = getattr(cls, "_extra", None)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise key_error(path, f"keys must be strings, got {describe(key)}")
        if key in known and key != extra_field:
            values[key] = _coerce(value, hints[key], _join(path, key))
        elif extra_field:
            extra[key] = value
        else:
            raise key_error(_join(path, key), f"unknown key{suggest(key, known)}")
    if extra_field:
        values[extra_field] = extra
    obj = cls(**values)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (or part of one): loads back to an equal config."""
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        extra_field = getattr(type(obj), "_extra", None)
        for f in fields(obj):
            if not f.init:
                continue
            value = to_dict(getattr(obj, f.name))
            if f.name == extra_field:
                out.update(value)
            else:
                out[f.name] = value
        return out
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], parsed value); the value is a YAML scalar or flow value."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, for example --set data.batch_size=64")
    value = parse_yaml(text, f"--set {printable(item)}") if text.strip() else None
    return key.split("."), value


def apply_override(raw: dict, keys: list[str], value: Any, item: str) -> None:
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(
                f"--set {printable(item)}: {where} is {describe(child)}, not a mapping; set {where} as a whole, "
                f"for example --set '{where}={{...}}'"
            )
        node = child
    node[keys[-1]] = value


def _locate(key: str, origins: dict[str, str]) -> str | None:
    """The origin of `key` or of its nearest ancestor."""
    while True:
        if key in origins:
            return origins[key]
        if not key:
            return None
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""


def from_dict(raw: Any, origins: dict[str, str] | None = None) -> Config:
    """Validate a plain dict into a Config (also used to rebuild from a checkpoint)."""
    try:
        return _build(Config, raw, "")
    except ConfigError as exc:
        key = getattr(exc, "key", None)
        where = _locate(key, origins or {}) if key is not None else None
        if where:
            raise ConfigError(f"{where}: {exc}") from None
        raise


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...], origins: dict[str, str]) -> dict:
    """Apply `--set KEY=VALUE` items to a raw config dict; each key's origin becomes its flag."""
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(raw, keys, value, item)
        dotted = ".".join(keys)
        for k in [k for k in origins if k == dotted or k.startswith(dotted + ".") or k.startswith(dotted + "[")]:
            del origins[k]
        origins[dotted] = f"--set {printable(item)}"
    return raw


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the path given to --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    lines: dict[str, int] = {}
    raw = parse_yaml(text, str(path), lines)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {describe(raw)}")
    origins = {k: f"{path}:{line}" for k, line in lines.items()}
    return from_dict(apply_overrides(raw, overrides, origins), origins)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML; `load_config` of it gives an equal config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)
