"""A model from the config: built by its source (`models.table`), then init, starting weights, replace, freeze."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainkit.config import specs
from trainkit.errors import ConfigError, key_error
from trainkit.models.layers import build_node
from trainkit.models.schema import InitConfig, ModelConfig
from trainkit.models.spec import Node
from trainkit.models.table import SOURCES
from trainkit.text import suggest


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


def build_model(
    cfg: ModelConfig,
    seed: int | None = None,
    notes: list[str] | None = None,
    load_weights: Callable[[nn.Module, str, str], str | None] | None = None,
    num_classes: int | None = None,
    check_file: Callable[[str], None] | None = None,
) -> nn.Module:
    """Build the model of a `ModelConfig` from its source (`models.table`), seeded so that the same seed gives
    the same weights; init it, load `model.weights` (or the file of `model.pretrained`) through `load_weights`
    (the store's, given by whoever builds the run; None: the model's own weights come later, from a
    checkpoint), replace and freeze. A source that loads its weights itself (timm) does, once `check_file`
    (the store's checks of a file) has passed `model.weights`. `num_classes`: the data's, for a pretrained
    source's new head. What is worth saying (a head left unloaded) goes to `notes`."""
    if seed is not None:
        torch.manual_seed(seed)
    source, named = SOURCES[cfg.source], cfg.pretrained_weights
    note = None
    if load_weights is not None and (cfg.weights or named) and source.load is not None:
        if cfg.weights and check_file is not None:
            check_file(cfg.weights)
        model, note = source.load(cfg, num_classes)
        if hasattr(model, "get_classifier"):  # model.init applies to timm's fresh head alone
            apply_init(model, cfg.init, only=model.get_classifier())
    else:
        model = source.build(cfg, num_classes)
        apply_init(model, cfg.init)
        if load_weights is not None and (cfg.weights or named):  # the store reads the file; the caller chooses to
            if cfg.weights:
                note = load_weights(model, cfg.weights, "model.weights")
            elif named is not None:
                note = load_weights(model, named.url, f"model.pretrained {named.name}")
    if note and notes is not None:
        notes.append(note)
    _replace(model, cfg.replacements, cfg.init)
    freeze(model, cfg.freeze)
    return model
