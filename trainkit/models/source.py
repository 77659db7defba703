"""What a model source is: how its key in the config's `model` section is checked, and how it builds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelSource:
    """One way to get a model. `check(model_cfg, path)` runs at config time and returns what `build` needs
    (kept as `model_cfg.net`); `build(model_cfg)` makes the nn.Module; `describe(model_cfg)` names it (in the
    report). The source's own key is the `model` field of its name (`model.sequential: [...]`)."""

    check: Callable[[Any, str], Any]
    build: Callable[[Any], Any]
    describe: Callable[[Any], str]
