"""The `model` section of a config: its source (a spec in YAML, or a torchvision name), weights, init,
freezing and replacements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from trainkit.config import specs
from trainkit.config.specs import Call
from trainkit.errors import key_error
from trainkit.models import spec as modelspec
from trainkit.models.source import Pretrained
from trainkit.models.table import SOURCES
from trainkit.text import suggest


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
    timm: str | None = None  # a timm.create_model name (the optional extra `timm`)
    python: str | None = None  # FILE.py:NAME or MODULE:NAME, a class or factory of the user's (models.python)
    args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    pretrained: Union[str, bool, None] = None  # named weights of the source (model.torchvision: DEFAULT, ...)
    init: dict[str, InitConfig] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)
    replace: dict[str, Any] = field(default_factory=dict)
    whiten: WhitenConfig | None = None  # initialize a first conv as a whitening of the data's patches
    source: str = field(init=False, default="")  # the key of models.table.SOURCES that is given
    net: Any = field(init=False, default=None)  # what the source's check returned (a parsed spec tree)
    replacements: dict[str, Any] = field(init=False, default_factory=dict)

    @property
    def pretrained_weights(self) -> Pretrained | None:
        """The named weights of `model.pretrained`, resolved by the source (None: none asked for)."""
        resolve = SOURCES[self.source].pretrained
        return resolve(self) if resolve is not None else None

    def _check(self, path: str) -> None:
        given = [k for k in SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            names = list(SOURCES)
            one_of = ", ".join(names[:-1]) + " or " + names[-1]
            raise key_error(path, f"give exactly one of {one_of} (got {what})")
        if self.forward is not None and self.moduledict is None:
            raise key_error(f"{path}.forward", "only applies to model.moduledict")
        self.source = given[0]
        if self.pretrained not in (None, False) and SOURCES[self.source].pretrained is None:
            raise key_error(f"{path}.pretrained", f"model.{self.source} has no named weights; use model.weights: PATH")
        if self.pretrained not in (None, False) and self.weights:
            raise key_error(f"{path}.pretrained", "give model.pretrained or model.weights, not both")
        self.net = SOURCES[self.source].check(self, path)
        layers = specs.nn_layers()
        for name in self.init:
            if name not in layers:
                raise key_error(f"{path}.init.{name}", f"unknown layer type{suggest(name, set(layers))}")
        self.replacements = {
            name: modelspec.parse_node(raw, f"{path}.replace.{name}") for name, raw in self.replace.items()
        }
