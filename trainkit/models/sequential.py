"""`model.sequential`: a list of layers in YAML, an nn.Sequential (named layers: a mapping)."""

from __future__ import annotations

from typing import Any

from trainkit.models import spec
from trainkit.models.source import ModelSource


def build_tree(cfg: Any, num_classes: int | None = None) -> Any:
    from trainkit.models.layers import build_node

    return build_node(cfg.net)


SOURCE = ModelSource(
    check=lambda cfg, path: spec.parse_sequential(cfg.sequential, f"{path}.sequential"),
    build=build_tree,
    describe=lambda cfg: "nn.Sequential",
)
