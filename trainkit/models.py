"""Models from the config: nn.Sequential, nn.ModuleDict or torchvision; init, freeze, replace.

The spec tree is parsed at config time (`modelspec`) and built here (`build_model`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainkit import specs
from trainkit.checkpoint import load_weights
from trainkit.errors import ConfigError, key_error, suggest
from trainkit.modelspec import DictNode, Node, SeqNode
from trainkit.schema import InitConfig, ModelConfig


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
        return nn.Sequential(OrderedDict((str(name), m) for name, m in modules))
    if isinstance(node, DictNode):
        return OrderedModuleDict({name: build_node(child) for name, child in node.items}, node.forward)
    cls = specs.nn_layers()[node.name]
    try:
        return cls(*node.args, **node.kwargs)
    except Exception as exc:  # the constructor's own complaint, with the key path
        raise key_error(node.path, f"{node.name} rejected its arguments: {exc}") from None


def apply_init(model: nn.Module, init: dict[str, InitConfig], only: nn.Module | None = None) -> None:
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


def _replace(model: nn.Module, replacements: dict[str, Node], init: dict[str, InitConfig]) -> None:
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


def frozen_norms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers whose parameters are all frozen: they keep their running statistics too
    (the loop runs them in eval mode while training), as people fine-tuning a frozen backbone expect."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and (params := list(m.parameters(recurse=False)))
        and not any(p.requires_grad for p in params)
    ]


def build_model(cfg: ModelConfig, seed: int | None = None, notes: list[str] | None = None) -> nn.Module:
    """Build the model of a `ModelConfig`, seeded so that the same seed gives the same weights; what is
    worth saying (a head left unloaded) goes to `notes`."""
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
        note = load_weights(model, cfg.weights)
        if note and notes is not None:
            notes.append(note)
    _replace(model, cfg.replacements, cfg.init)
    freeze(model, cfg.freeze)
    return model
