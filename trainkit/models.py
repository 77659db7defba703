"""Models from the config: nn.Sequential, nn.ModuleDict or torchvision; init, freeze, replace.

The spec tree is parsed at config time (`parse_*`, `check_torchvision`) and
built here (`build_model`). A spec node is one of:

- a layer `Call` (a class of `torch.nn` and its arguments),
- `SeqNode` (`sequential:` a list, or a mapping of name to node),
- `DictNode` (`moduledict:` a mapping of name to node, applied in `forward` order).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

from trainkit import specs
from trainkit.errors import ConfigError
from trainkit.specs import Call, describe, key_error, suggest


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
    if hasattr(OrderedModuleDict, name) or hasattr(nn.Sequential, name):
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
                "trainkit never downloads weights; give a local state_dict file as model.weights: PATH",
            )


class OrderedModuleDict(nn.ModuleDict):
    """An nn.ModuleDict applied as a chain, in the order of `forward`."""

    def __init__(self, modules: dict[str, nn.Module], order: list[str]) -> None:
        super().__init__(modules)
        self.order = list(order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = self[name](x)
        return x

    def extra_repr(self) -> str:
        return f"forward={self.order}"


def build_node(node: Node) -> nn.Module:
    if isinstance(node, SeqNode):
        modules = [(name, build_node(child)) for name, child in node.items]
        if all(name is None for name, _ in modules):
            return nn.Sequential(*(m for _, m in modules))
        return nn.Sequential(OrderedDict(modules))
    if isinstance(node, DictNode):
        return OrderedModuleDict({name: build_node(child) for name, child in node.items}, node.forward)
    cls = specs.nn_layers()[node.name]
    try:
        return cls(*node.args, **node.kwargs)
    except Exception as exc:  # the constructor's own complaint, with the key path
        raise key_error(node.path, f"{node.name} rejected its arguments: {exc}") from None


def apply_init(model: nn.Module, init: dict, only: nn.Module | None = None) -> None:
    """Apply `model.init` to every layer whose type is named; others keep PyTorch's defaults."""
    if not init:
        return
    fns = specs.initializers()
    scope = only if only is not None else model
    with torch.no_grad():
        for mod_name, module in scope.named_modules():
            spec = init.get(type(module).__name__)
            if spec is None:
                continue
            for param, call in spec.calls.items():
                tensor = getattr(module, param, None)
                if not isinstance(tensor, torch.Tensor):
                    continue
                try:
                    fns[call.name](tensor, *call.args, **call.kwargs)
                except (ValueError, RuntimeError) as exc:
                    where = mod_name or "(root)"
                    raise key_error(
                        call.path,
                        f"{call.name} cannot initialize {where} ({type(module).__name__}) {param} "
                        f"of shape {tuple(tensor.shape)}: {exc}",
                    ) from None


def _replace(model: nn.Module, replacements: dict[str, Node], init: dict) -> None:
    names = [n for n, _ in model.named_modules() if n]
    for target, node in replacements.items():
        if target not in names:
            raise ConfigError(f"model.replace.{target}: no submodule named {target!r}{suggest(target, names)}")
        parent_name, _, attr = target.rpartition(".")
        new = build_node(node)
        apply_init(model, init, only=new)
        setattr(model.get_submodule(parent_name), attr, new)


def freeze(model: nn.Module, prefixes: list[str]) -> int:
    """Set requires_grad=False on parameters under the prefixes; returns how many tensors."""
    names = [n for n, _ in model.named_parameters()]
    count = 0
    for i, prefix in enumerate(prefixes):
        stem = prefix.rstrip(".")
        hits = [n for n in names if n == stem or n.startswith(stem + ".")]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names} | set(names))
            raise ConfigError(f"model.freeze[{i}]: no parameter named or under {prefix!r}{suggest(stem, tops)}")
        for name, p in model.named_parameters():
            if name in hits:
                p.requires_grad_(False)
                count += 1
    return count


def build_model(cfg: Any, seed: int | None = None) -> nn.Module:
    """Build the model of a `ModelConfig`, seeded so that the same seed gives the same weights."""
    if seed is not None:
        torch.manual_seed(seed)
    if cfg.net is not None:
        model = build_node(cfg.net)
    else:
        import torchvision.models

        try:
            model = torchvision.models.get_model(cfg.torchvision, weights=None, **cfg.args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.args: torchvision {cfg.torchvision} rejected its arguments: {exc}") from None
    apply_init(model, cfg.init)
    if cfg.weights:
        from trainkit.checkpoint import load_weights

        load_weights(model, cfg.weights)
    _replace(model, cfg.replacements, cfg.init)
    freeze(model, cfg.freeze)
    return model
