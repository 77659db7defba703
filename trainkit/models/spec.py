"""The model spec tree of a config, parsed and checked at config time (`models.layers` builds it).

A spec node is one of:

- a layer `Call` (a class of `torch.nn` and its arguments),
- `SeqNode` (`sequential:` a list, or a mapping of name to node),
- `DictNode` (`moduledict:` a mapping of name to node, applied in `forward` order).

`models.schema` checks it and `models.layers` builds it; it imports neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from torch import nn

from trainkit.config import specs
from trainkit.config.specs import Call
from trainkit.errors import key_error
from trainkit.text import describe, suggest


@dataclass
class SeqNode:
    items: list[tuple[str | None, Any]]
    path: str


@dataclass
class DictNode:
    items: list[tuple[str, Any]]
    forward: list[str]
    path: str


Node = Union[Call, SeqNode, DictNode]
_NAME = re.compile(r"[A-Za-z_][\w-]*")


def _check_name(name: Any, path: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise key_error(path, f"a layer name must be an identifier without dots, got {describe(name)}")
    if hasattr(nn.ModuleDict, name) or hasattr(nn.Sequential, name) or name == "order":
        raise key_error(f"{path}.{name}", "this name is taken by an nn.Module attribute; choose another layer name")
    return name


def parse_node(raw: Any, path: str) -> Node:
    """One layer, or a nested `sequential:` / `moduledict:` block."""
    if isinstance(raw, dict) and raw and set(raw) <= {"sequential"}:
        return parse_sequential(raw["sequential"], f"{path}.sequential")
    if isinstance(raw, dict) and "moduledict" in raw and set(raw) <= {"moduledict", "forward"}:
        return parse_moduledict(raw["moduledict"], raw.get("forward"), path)
    return specs.parse_call(raw, path, specs.nn_layers(), "layer")


def parse_sequential(raw: Any, path: str) -> SeqNode:
    if isinstance(raw, list) and raw:
        return SeqNode([(None, parse_node(item, f"{path}[{i}]")) for i, item in enumerate(raw)], path)
    if isinstance(raw, dict) and raw:
        return SeqNode([(_check_name(k, path), parse_node(v, f"{path}.{k}")) for k, v in raw.items()], path)
    raise key_error(path, f"expected a non-empty list of layers or mapping of name to layer, got {describe(raw)}")


def parse_moduledict(raw: Any, forward: Any, path: str) -> DictNode:
    dpath = f"{path}.moduledict"
    if not isinstance(raw, dict) or not raw:
        raise key_error(dpath, f"expected a non-empty mapping of name to layer, got {describe(raw)}")
    items = [(_check_name(k, dpath), parse_node(v, f"{dpath}.{k}")) for k, v in raw.items()]
    names = [k for k, _ in items]
    if forward is None:
        forward = names
    if not isinstance(forward, list) or not forward:
        raise key_error(f"{path}.forward", f"expected a non-empty list of layer names, got {describe(forward)}")
    for i, name in enumerate(forward):
        if name not in names:
            raise key_error(f"{path}.forward[{i}]", f"no layer named {name!r} in moduledict{suggest(str(name), names)}")
    return DictNode(items, list(forward), path)


def check_torchvision(name: str, args: dict[str, Any], path: str) -> None:
    import torchvision.models

    available = torchvision.models.list_models()
    if name not in available:
        raise key_error(f"{path}.torchvision", f"unknown torchvision model {name!r}{suggest(name, available)}")
    for forbidden in ("weights", "weights_backbone", "pretrained"):
        if forbidden in args:
            raise key_error(
                f"{path}.args.{forbidden}",
                "trainkit never downloads weights through args; name them as model.pretrained: NAME "
                "(e.g. DEFAULT), or give a local state_dict file as model.weights: PATH",
            )
