"""What a config holds: one dataclass per section, with its defaults and the checks that span its keys.

`config` builds these from YAML and `--set` overrides; every later module receives them typed and
checked, and never re-validates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from trainkit import modelspec, specs
from trainkit.errors import check_count, check_parallel, key_error, suggest
from trainkit.schema_train import (  # noqa: F401  (the loop's sections, re-exported: `from trainkit.schema import ...`)
    METRICS,
    SCHEDULER_RATES,
    CheckpointEveryConfig,
    EarlyStoppingConfig,
    EmaConfig,
    EvalConfig,
    GradClipConfig,
    LossConfig,
    OptimConfig,
    ParamGroupConfig,
    SchedulerConfig,
    TrainConfig,
)
from trainkit.specs import Call

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit seed
ENV_NAME = re.compile(r"\w[\w.-]*")  # a visdom env is saved as ENV.json: no path, no hidden file


def check_port(port: int, key: str) -> None:
    if not 1 <= port <= 65535:
        raise key_error(key, f"a TCP port is from 1 to 65535, got {port}")


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
class ScanConfig:
    """The bounds of a data folder's scan: a wrong folder (`/proc`, `/`, a home folder) ends in one line."""

    max_other_files: int = 10_000  # files that are not images
    max_depth: int = 32  # folders below a class folder

    def _check(self, path: str) -> None:
        for name in ("max_other_files", "max_depth"):
            if getattr(self, name) < 0:
                raise key_error(f"{path}.{name}", f"must be >= 0, got {getattr(self, name)}")


BATCH_TRANSFORMS = ("MixUp", "CutMix")  # torchvision v2's transforms of whole batches


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
        for call in self.train_calls:
            if call.name in BATCH_TRANSFORMS:
                raise key_error(
                    call.path,
                    f"{call.name} mixes whole batches (images and labels), not one image; "
                    f"move it to data.batch_transforms (e.g. batch_transforms: [{{{call.name}: {{alpha: 1.0}}}}])",
                )
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
    batch_transforms: list[Any] = field(default_factory=list)  # MixUp, CutMix: one per batch, chosen at random
    batch_calls: list[Call] = field(init=False, default_factory=list)
    on_bad_image: Literal["error", "skip"] = "error"
    max_bad_fraction: float = 0.5  # on_bad_image: skip: an epoch with more of its images bad is an error
    cache: Literal["none", "memory", "disk"] = "none"
    cache_dir: str | None = None
    cache_size: int | None = None  # photos of many sizes: stored with the shorter side at most this (cache.py)
    subset: int | None = None
    scan: ScanConfig = field(default_factory=ScanConfig)

    @property
    def eval_batch_size(self) -> int:
        return self.val_batch_size or self.batch_size

    def _check(self, path: str) -> None:
        names = {n: c for n, c in specs.transforms().items() if n in BATCH_TRANSFORMS}
        self.batch_calls = [
            specs.parse_call(t, f"{path}.batch_transforms[{i}]", names, "batch transform")
            for i, t in enumerate(self.batch_transforms)
        ]
        for name in ("batch_size", "val_batch_size", "prefetch_factor", "subset", "cache_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise key_error(f"{path}.{name}", f"must be a positive integer, got {value}")
            check_count(value, f"{path}.{name}")
        if self.num_workers < 0:
            raise key_error(f"{path}.num_workers", f"must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.max_bad_fraction < 1.0:
            raise key_error(f"{path}.max_bad_fraction", f"must be from 0 to below 1, got {self.max_bad_fraction}")
        check_parallel(self.num_workers, f"{path}.num_workers", "worker processes")
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
class WhitenConfig:
    layer: str = ""  # the Conv2d that sees the images, by its name in the model (e.g. "0" or "stem.conv")
    images: int = 5000  # training images whose patches are measured
    eps: float = 5.0e-4  # added to each variance before the 1/sqrt

    def _check(self, path: str) -> None:
        if not self.layer:
            raise key_error(f"{path}.layer", "name the first Conv2d, e.g. layer: '0' for a sequential model")
        if self.images < 2:
            raise key_error(f"{path}.images", f"must be at least 2, got {self.images}")
        if not self.eps > 0:
            raise key_error(f"{path}.eps", f"must be > 0, got {self.eps}")


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
    whiten: WhitenConfig | None = None  # initialize a first conv as a whitening of the data's patches
    net: Any = field(init=False, default=None)
    replacements: dict[str, Any] = field(init=False, default_factory=dict)

    def _check(self, path: str) -> None:
        given = [k for k in ("sequential", "moduledict", "torchvision") if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise key_error(path, f"give exactly one of sequential, moduledict or torchvision (got {what})")
        if self.forward is not None and self.moduledict is None:
            raise key_error(f"{path}.forward", "only applies to model.moduledict")
        if self.sequential is not None:
            self.net = modelspec.parse_sequential(self.sequential, f"{path}.sequential")
        elif self.moduledict is not None:
            self.net = modelspec.parse_moduledict(self.moduledict, self.forward, path)
        else:
            assert self.torchvision is not None
            modelspec.check_torchvision(self.torchvision, self.args, path)
        layers = specs.nn_layers()
        for name in self.init:
            if name not in layers:
                raise key_error(f"{path}.init.{name}", f"unknown layer type{suggest(name, set(layers))}")
        self.replacements = {
            name: modelspec.parse_node(raw, f"{path}.replace.{name}") for name, raw in self.replace.items()
        }


@dataclass
class VisdomConfig:
    enabled: bool = True
    server: str = "http://localhost"
    port: int = 8097
    env: str | None = None
    log_every: int = 50

    def _check(self, path: str) -> None:
        check_port(self.port, f"{path}.port")
        if self.env is not None and not ENV_NAME.fullmatch(self.env):
            raise key_error(
                f"{path}.env",
                f"use letters, digits, '_', '-' and '.' (not first) only: visdom saves an env as a file of its name; "
                f"got {self.env!r}",
            )
        check_count(self.log_every, f"{path}.log_every")


@dataclass
class TensorBoardConfig:
    enabled: bool = False
    dir: str | None = None  # default: <run_dir>/tb


@dataclass
class LogConfig:
    visdom: VisdomConfig = field(default_factory=VisdomConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    # off: no bar and no step lines, the epoch lines stay; quiet (train --quiet): only warnings and errors
    progress: Literal["auto", "bar", "lines", "off", "quiet"] = "auto"
    report: bool = True  # report.html and report/*.png at the end of a run (trainkit report)


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    device: str = "auto"
    threads: Union[Literal["auto"], int] = "auto"  # torch's intra-op threads; auto leaves torch's default
    run_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def run_path(self) -> Path:
        """Where the run writes: `run_dir`, by default runs/<name>."""
        return Path(self.run_dir or f"runs/{self.name}")

    @property
    def visdom_env(self) -> str:
        """The run's visdom env: log.visdom.env, by default the run directory's name (two runs of one config
        in two folders draw apart)."""
        name = self.run_path.name
        return self.log.visdom.env or (name if ENV_NAME.fullmatch(name) else self.name)

    def _check(self, path: str) -> None:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise key_error("device", f"expected auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if isinstance(self.threads, int) and self.threads < 1:
            raise key_error("threads", f"must be a positive number of threads, or auto, got {self.threads}")
        if isinstance(self.threads, int):
            check_parallel(self.threads, "threads", "threads")
        if not 0 <= self.seed <= MAX_SEED:
            raise key_error("seed", f"must be an integer from 0 to 2**63 - 1 ({MAX_SEED:,}), got {self.seed}")
        if not re.fullmatch(r"[\w.-]+", self.name):
            raise key_error("name", f"use letters, digits, '.', '_' and '-' only, got {self.name!r}")
        if self.run_dir is None:
            self.run_dir = f"runs/{self.name}"
