"""`model.torchvision: NAME` with `model.args`: a torchvision architecture, never with downloaded weights."""

from __future__ import annotations

from typing import Any

from trainkit.errors import ConfigError
from trainkit.models import spec
from trainkit.models.source import ModelSource


def build_torchvision(cfg: Any) -> Any:
    import torchvision.models

    try:
        return torchvision.models.get_model(cfg.torchvision, weights=None, **cfg.args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.args: torchvision {cfg.torchvision} rejected its arguments: {exc}") from None


SOURCE = ModelSource(
    check=lambda cfg, path: spec.check_torchvision(cfg.torchvision, cfg.args, path),
    build=build_torchvision,
    describe=lambda cfg: str(cfg.torchvision),
)
