"""Plain YAML data in, validated dataclasses out: the type-driven builder every config section goes through.

A section is a dataclass: its fields' type hints say what each key accepts, `_check(path)` checks what spans
keys, `_shorthand` and `_extra` shape the raw value. A `ConfigError` names the key path, what was expected and
what was given. `apply_overrides` applies `--set KEY=VALUE` items, each key's origin becoming its flag.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from trainkit.config import specs
from trainkit.config.train import LossConfig, OptimConfig, SchedulerConfig
from trainkit.config.yamlio import parse_yaml
from trainkit.errors import ConfigError, key_error
from trainkit.text import describe, join_key, printable, suggest

# --------------------------------------------------------------------------- validation


def _expected(hint: Any) -> str:
    if hint is Any:
        return "any value"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


def _matches_kind(value: Any, hint: Any) -> bool:
    """Whether `value` has the shape `hint` asks for, so its own error is the useful one."""
    if dataclasses.is_dataclass(hint) or get_origin(hint) is dict:
        return isinstance(value, dict)
    if get_origin(hint) is list:
        return isinstance(value, list)
    return False


_NO: tuple[bool, Any] = (False, None)  # what a check returns when the value is not of its kind


def _union(value: Any, hint: Any, path: str) -> tuple[bool, Any]:
    arms = get_args(hint)
    if value is None and type(None) in arms:
        return True, None
    kind_error = None
    for arm in arms:
        try:
            return True, _coerce(value, arm, path)
        except ConfigError as exc:
            if kind_error is None and _matches_kind(value, arm):
                kind_error = exc
    if kind_error is not None:
        raise kind_error
    return _NO


def _literal(value: Any, hint: Any, path: str) -> tuple[bool, Any]:
    choices = get_args(hint)
    if isinstance(value, bool) and ("off" if value is False else "on") in choices:
        return True, "off" if value is False else "on"  # YAML 1.1 reads a bare `off` as false
    if any(value == a and type(value) is type(a) for a in choices):
        return True, value
    return _NO


def _list(value: Any, hint: Any, path: str) -> tuple[bool, Any]:
    if not isinstance(value, list):
        return _NO
    (item,) = get_args(hint)
    return True, [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]


def _dict(value: Any, hint: Any, path: str) -> tuple[bool, Any]:
    if not isinstance(value, dict):
        return _NO
    _, item = get_args(hint)
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise key_error(path, f"keys must be strings, got {describe(k)}")
        out[k] = _coerce(v, item, join_key(path, k))
    return True, out


_BY_ORIGIN = {Union: _union, types.UnionType: _union, Literal: _literal, list: _list, dict: _dict}
_SCALARS: dict[Any, Callable[[Any], bool]] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    type(None): lambda v: v is None,
}


def _coerce(value: Any, hint: Any, path: str) -> Any:
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build_section(hint, value, path)
    check = _BY_ORIGIN.get(get_origin(hint))
    if check is not None:
        ok, out = check(value, hint, path)
    else:
        accepts = _SCALARS.get(hint)
        ok = accepts is not None and accepts(value)
        out = float(value) if ok and hint is float else value
    if ok:
        return out
    raise key_error(path, f"expected {_expected(hint)}, got {describe(value)}")


def build_section(cls: type, raw: Any, path: str) -> Any:
    shorthand = getattr(cls, "_shorthand", None)
    if shorthand is not None:
        raw = shorthand(raw)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise key_error(path, f"expected a mapping, got {describe(raw)}")
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    extra_field = getattr(cls, "_extra", None)
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise key_error(path, f"keys must be strings, got {describe(key)}")
        if key in known and key != extra_field:
            values[key] = _coerce(value, hints[key], join_key(path, key))
        elif extra_field:
            extra[key] = value
        else:
            hint = suggest(key, known) or (f"; the top-level keys are {', '.join(known)}" if not path else "")
            raise key_error(join_key(path, key), f"unknown key{hint}")
    if extra_field:
        values[extra_field] = extra
    obj = cls(**values)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (or part of one): loads back to an equal config."""
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        extra_field = getattr(type(obj), "_extra", None)
        for f in fields(obj):
            if not f.init:
                continue
            value = to_dict(getattr(obj, f.name))
            if f.name == extra_field:
                out.update(value)
            else:
                out[f.name] = value
        return out
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], parsed value); the value is a YAML scalar or flow value."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, for example --set data.batch_size=64")
    value = parse_yaml(text, f"--set {printable(item)}") if text.strip() else None
    return key.split("."), value


def apply_override(raw: dict, keys: list[str], value: Any, item: str) -> None:
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(
                f"--set {printable(item)}: {where} is {describe(child)}, not a mapping; set {where} as a whole, "
                f"for example --set '{where}={{...}}'"
            )
        node = child
    node[keys[-1]] = value


def locate(key: str, origins: dict[str, str]) -> str | None:
    """The origin of `key` or of its nearest ancestor, else of a key under it (`--set foo.bar` for `foo`)."""
    below = next((origins[k] for k in origins if k.startswith(key + ".") or k.startswith(key + "[")), None)
    while True:
        if key in origins:
            return origins[key]
        if not key:
            return below
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""


def validate(cls: type, raw: Any, origins: dict[str, str] | None = None) -> Any:
    """Validate a plain dict into the dataclass `cls`; an error names the key's origin (file:line, `--set`)."""
    try:
        return build_section(cls, raw, "")
    except ConfigError as exc:
        key = getattr(exc, "key", None)
        where = locate(key, origins or {}) if key is not None else None
        if where:
            raise ConfigError(f"{where}: {exc}") from None
        raise


def apply_overrides(
    raw: dict, overrides: list[str] | tuple[str, ...], origins: dict[str, str], notes: list[str] | None = None
) -> dict:
    """Apply `--set KEY=VALUE` items to a raw config dict; each key's origin becomes its flag.

    When `--set` changes the class of the optimizer, scheduler or loss, the arguments that came from
    elsewhere and that the new class does not take are dropped, each drop said in `notes`.
    """
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(raw, keys, value, item)
        dotted = ".".join(keys)
        for k in [k for k in origins if k == dotted or k.startswith(dotted + ".") or k.startswith(dotted + "[")]:
            del origins[k]
        origins[dotted] = f"--set {printable(item)}"
    dropped = _drop_foreign_arguments(raw, origins)
    if notes is not None:
        notes.extend(dropped)
    return raw


# section -> (its classes, leading arguments trainkit supplies, the section's dataclass)
_CLASS_SECTIONS: dict[str, tuple[Callable[[], dict[str, type]], int, type]] = {
    "optim": (specs.optimizers, 1, OptimConfig),
    "scheduler": (specs.schedulers, 1, SchedulerConfig),
    "train.loss": (specs.nn_losses, 0, LossConfig),
}


def _drop_foreign_arguments(raw: dict, origins: dict[str, str]) -> list[str]:
    notes = []
    for section, (classes, skip, cls) in _CLASS_SECTIONS.items():
        if not origins.get(f"{section}.type", "").startswith("--set"):
            continue
        node: Any = raw
        for key in section.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        name = node.get("type") if isinstance(node, dict) else None
        target = classes().get(name) if isinstance(name, str) else None
        accepted = specs.accepted_names(target, skip) if target is not None else None
        if node is None or accepted is None:  # an unknown class is said by validation
            continue
        own = {f.name for f in fields(cls) if f.init} - {getattr(cls, "_extra", "")}
        dropped = [
            k
            for k in node
            if k not in own and k not in accepted and not origins.get(f"{section}.{k}", "").startswith("--set")
        ]
        for k in dropped:
            del node[k]
        if dropped:
            notes.append(f"{section}: dropped {', '.join(dropped)}: not arguments of {node['type']}")
    return notes
