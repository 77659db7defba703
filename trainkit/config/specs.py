"""Parsing of `Name: args` call specs: layers, transforms and initializers.

A spec names a class (or function) in one namespace and gives its arguments in
one of the forms a user would write in YAML:

    - Conv2d: [3, 32, 3]          # positional arguments
    - ReLU: {inplace: true}       # keyword arguments
    - Flatten: {}                 # no arguments
    - Flatten                     # no arguments, bare name
    - Dropout: 0.5                # a single positional argument

Every check happens here, at config time, so that a typo costs a second and
names its key path, not a stack trace an hour into training.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainkit.errors import key_error
from trainkit.text import describe, suggest


@dataclass
class Call:
    """A parsed spec: the target's name, its arguments and its config path."""

    name: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    path: str = ""


def split_call(raw: Any, path: str, what: str) -> tuple[str, list, dict]:
    """Split `Name`, `Name: [args]`, `Name: {kwargs}`, `Name: {}`, `Name: x`."""
    if isinstance(raw, str):
        return raw, [], {}
    if isinstance(raw, dict) and len(raw) == 1:
        ((name, value),) = raw.items()
        if not isinstance(name, str):
            raise key_error(path, f"{what} name must be a string, got {describe(name)}")
        if value is None:
            return name, [], {}
        if isinstance(value, list):
            return name, list(value), {}
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise key_error(path, f"argument names must be strings, got {describe(bad[0])}")
            return name, [], dict(value)
        return name, [value], {}
    raise key_error(
        path,
        f"expected a {what} as `Name`, `Name: [args]` or `Name: {{kwargs}}`, got {describe(raw)}",
    )


def accepted_names(target: Callable, skip: int = 0) -> set[str] | None:
    """The keyword arguments `target` takes (after `skip` leading ones), or None when it takes any."""
    try:
        params = list(inspect.signature(target).parameters.values())[skip:]
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind != p.VAR_POSITIONAL}


def check_signature(target: Callable, args: list, kwargs: dict, path: str, skip: int = 0, typed: bool = False) -> None:
    """Fail with the key path when `target(*args, **kwargs)` cannot bind.

    `skip` leading positional parameters are supplied by trainkit (the tensor of
    an initializer, the parameters of an optimizer). With `typed`, a string given
    where the parameter's default is a number or a bool is an error too (for the
    optimizer, scheduler and loss, whose numbers are plain numbers).
    """
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature
        return
    params = list(sig.parameters.values())[skip:]
    sig = sig.replace(parameters=params)
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        unknown = next((k for k in kwargs if k not in sig.parameters), None)
        hint = suggest(unknown, names) if unknown else ""
        accepted = ", ".join(names) if names else "no arguments"
        where = f"{path}.{unknown}" if unknown and path else path  # blame the key itself (its line, or its --set)
        raise key_error(where, f"{exc}{hint} (accepted: {accepted})") from None
    if typed:
        for key, value in kwargs.items():
            param = sig.parameters.get(key)
            default = param.default if param is not None else None
            if isinstance(value, str) and isinstance(default, (bool, int, float)):
                kind = "true or false" if isinstance(default, bool) else "a number"
                name = getattr(target, "__name__", "it")
                raise key_error(
                    f"{path}.{key}", f"expected {kind} ({name}'s default is {default!r}), got {describe(value)}"
                )


def parse_call(
    raw: Any,
    path: str,
    namespace: dict[str, Any],
    what: str,
    skip: int = 0,
) -> Call:
    """Parse one spec against `namespace` (name -> class or function)."""
    name, args, kwargs = split_call(raw, path, what)
    if name not in namespace:
        raise key_error(path, f"unknown {what} {name!r}{suggest(name, set(namespace))}")
    check_signature(namespace[name], args, kwargs, path, skip=skip)
    return Call(name, args, kwargs, path)


_NN_CACHE: dict[str, type] = {}
ABSTRACT_LAYERS = ("Module", "Container")
# transforms that take code (a callable) or other transforms, which a YAML value cannot be
CODE_TRANSFORMS = ("Lambda", "Transform", "Compose", "RandomApply", "RandomChoice", "RandomOrder")


def nn_layers() -> dict[str, type]:
    """Module classes of `torch.nn`: the only names a layer spec may use."""
    if not _NN_CACHE:
        import torch.nn as nn

        for name in dir(nn):
            obj = getattr(nn, name)
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and not name.startswith("_"):
                _NN_CACHE[name] = obj
        for base in ABSTRACT_LAYERS:  # base classes, not layers: they build nothing that computes
            _NN_CACHE.pop(base, None)
    return _NN_CACHE


def nn_losses() -> dict[str, type]:
    return {k: v for k, v in nn_layers().items() if k.endswith("Loss")}


def _public_classes(module: Any, base: type) -> dict[str, type]:
    return {
        name: obj
        for name in dir(module)
        if not name.startswith("_")
        and inspect.isclass(obj := getattr(module, name))
        and issubclass(obj, base)
        and obj is not base
    }


def optimizers() -> dict[str, type]:
    import torch

    return _public_classes(torch.optim, torch.optim.Optimizer)


def schedulers() -> dict[str, type]:
    import torch

    found = _public_classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler)
    found["ReduceLROnPlateau"] = torch.optim.lr_scheduler.ReduceLROnPlateau
    for helper in ("SequentialLR", "ChainedScheduler", "LRScheduler"):
        found.pop(helper, None)  # they take scheduler objects, not config values
    return found


def transforms() -> dict[str, type]:
    """Transform classes of torchvision.transforms.v2 (the API trainkit uses)."""
    import torch
    from torchvision.transforms import v2

    found = _public_classes(v2, torch.nn.Module)
    for name in CODE_TRANSFORMS:
        found.pop(name, None)
    found["ToTensor"] = ToTensor
    return found


class ToTensor:
    """PIL image to a float tensor in [0, 1]; v2's recommended replacement of v1's ToTensor."""

    def __new__(cls):  # noqa: D102 - returns the v2 pipeline, not an instance
        import torch
        from torchvision.transforms import v2

        return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


# Initializers by the names users know, each mapped to its in-place function.
INIT_NAMES = (
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "normal",
    "uniform",
    "constant",
    "zeros",
    "ones",
    "orthogonal",
    "trunc_normal",
    "dirac",
    "eye",
)


def initializers() -> dict[str, Callable]:
    import torch.nn.init as init

    return {name: getattr(init, name + "_") for name in INIT_NAMES}
