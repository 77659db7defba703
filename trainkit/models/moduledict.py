"""`model.moduledict` with `model.forward`: named blocks in YAML, an nn.ModuleDict run in the order given."""

from __future__ import annotations

from trainkit.models import spec
from trainkit.models.sequential import build_tree
from trainkit.models.source import ModelSource

SOURCE = ModelSource(
    check=lambda cfg, path: spec.parse_moduledict(cfg.moduledict, cfg.forward, path),
    build=build_tree,  # the parsed tree is built as a sequential one is
    describe=lambda cfg: "nn.ModuleDict",
)
