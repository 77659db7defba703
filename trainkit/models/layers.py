"""A parsed spec tree (`models.spec`) built into modules: nn.Sequential, or an nn.ModuleDict run as a chain."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainkit.config import specs
from trainkit.errors import key_error
from trainkit.models.spec import DictNode, Node, SeqNode


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
