"""A run's whole config: the `Config` that holds every package's section, and the one way to read it.

`load_config(path, overrides)` is the only entry point the rest of trainkit needs: YAML in (the safe
reader), `--set` overrides applied, every section validated by `config.typed`. Later modules receive the
typed objects and never re-validate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from trainkit.config.train import EvalConfig, OptimConfig, SchedulerConfig, TrainConfig
from trainkit.config.typed import apply_overrides, build_section, to_dict, validate
from trainkit.config.yamlio import read_yaml_file
from trainkit.data.schema import DataConfig, TransformsConfig
from trainkit.errors import ConfigError, check_parallel, key_error
from trainkit.models import python as python_source
from trainkit.models.schema import ModelConfig
from trainkit.sinks.schema import ENV_NAME, LogConfig
from trainkit.text import describe

__all__ = ["Config", "apply_overrides", "dump_config", "from_dict", "load_config", "to_dict"]

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit seed


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
        named = self.model.pretrained_weights
        if named is not None and not self.data.transforms.train and self.data.transforms.val is None:
            self.data.transforms = build_section(TransformsConfig, named.transforms(), "data.transforms")


def from_dict(raw: Any, origins: dict[str, str] | None = None) -> Config:
    """Validate a plain dict into a Config (also used to rebuild from a checkpoint)."""
    result: Config = validate(Config, raw, origins)
    return result


SECTIONS_NEEDED = {
    "data": "no data section: give data.train and data.val (folders with one sub-folder per class), "
    "or data.dataset: cifar10 with data.root",
    "model": "no model section: give model.sequential (a list of layers), model.moduledict, "
    "model.torchvision or model.timm (a model name), or model.python (FILE.py:NAME, a model of your own)",
}


def load_config(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    notes: list[str] | None = None,
    needs: tuple[str, ...] = ("data", "model"),
) -> Config:
    """Read, override and validate a config file; `needs` are the sections it must have (after `--set`)."""
    path = Path(path)
    raw, lines = read_yaml_file(path, "config", "--config")
    if raw is None and not overrides:
        raise ConfigError(
            f"{path}: the file is empty (or holds only comments); a config needs a data section and a model "
            "section, see configs/digits.yaml"
        )
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {describe(raw)}")
    origins = {k: f"{path}:{line}" for k, line in lines.items()}
    raw = apply_overrides(raw, overrides, origins, notes)
    for section in needs:
        if section not in raw:
            raise ConfigError(f"{path}: {SECTIONS_NEEDED[section]}")
    model = raw.get("model")
    if isinstance(model, dict) and "python" in model:  # a file of the user's, relative to the config file
        model["python"] = python_source.relative_to(model["python"], str(path.parent))
    return from_dict(raw, origins)


def default_of(dotted: str) -> Any:
    """The schema's default of a key, e.g. `default_of("data.dataset")`."""
    node: Any = Config()
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML; `load_config` of it gives an equal config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)
