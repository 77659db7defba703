"""`model.python: "file.py:Name"` (a file, relative to the config file) or `"package.module:attr.path"` with
`model.args`: a class or factory of your own that returns an `nn.Module`, as Lightning CLI's `class_path`.

Importing it runs its code. A config the user trains is trusted, as a script is; a checkpoint's reference is
imported only with `--trust-code` (`trained.load`). The reference is parsed at config time and imported when
the model is built: `args` are checked against its signature there, before anything is written.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from trainkit.config import specs
from trainkit.errors import ConfigError, key_error
from trainkit.models.source import ModelSource
from trainkit.text import first_line

REFERENCE = re.compile(r"(?P<target>[^:]+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


@dataclass(frozen=True)
class Reference:
    target: str  # a .py file (absolute once the config is loaded) or a module name
    attr: str  # the callable in it, dotted: `EfficientNet.from_name`

    @property
    def is_file(self) -> bool:
        return self.target.endswith(".py")

    def __str__(self) -> str:
        return f"{self.target}:{self.attr}"


def parse(raw: str, path: str) -> Reference:
    m = REFERENCE.fullmatch(raw.strip())
    if not m:
        raise key_error(
            f"{path}.python",
            f"expected FILE.py:NAME or MODULE:NAME (e.g. mymodels.py:SmallNet), got {raw!r}",
        )
    return Reference(m["target"], m["attr"])


def relative_to(raw: Any, folder: str) -> Any:
    """A reference to a relative file, made absolute from the config file's `folder` (others as given)."""
    if isinstance(raw, str) and (m := REFERENCE.fullmatch(raw.strip())) and m["target"].endswith(".py"):
        if not os.path.isabs(m["target"]):
            return f"{os.path.normpath(os.path.join(os.path.abspath(folder), m['target']))}:{m['attr']}"
    return raw


def source_hash(ref: Reference) -> str | None:
    """The sha256 of a file reference's source (None for a module, or a file that is not there)."""
    if not ref.is_file or not os.path.isfile(ref.target):
        return None
    with open(ref.target, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def record(ref: Reference) -> dict[str, Any]:
    """What a checkpoint keeps of the reference: it, and the sha256 of its file."""
    return {"reference": str(ref), "sha256": source_hash(ref)}


def resolve(ref: Reference) -> Any:
    """Import the reference: this runs its code."""
    key = "model.python"
    try:
        if ref.is_file:
            if not os.path.isfile(ref.target):
                raise ConfigError(f"{key}: {ref.target} does not exist; give the file's path (relative to the config)")
            name = "trainkit_user_" + hashlib.sha256(ref.target.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, ref.target)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look a class's module up
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(ref.target)
    except ConfigError:
        raise
    except Exception as exc:  # the user's code failed to import: its own first line
        raise ConfigError(f"{key}: importing {ref.target} failed: {type(exc).__name__}: {first_line(exc)}") from None
    target: Any = module
    for part in ref.attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{key}: {ref.target} has no {ref.attr!r} ({part!r} is missing)")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{key}: {ref} is not a class or a function")
    return target


def build_python(cfg: Any, num_classes: int | None) -> Any:
    from torch import nn

    make = resolve(cfg.net)
    args = dict(cfg.args)
    accepted = specs.accepted_names(make)
    if num_classes is not None and "num_classes" not in args and accepted is not None and "num_classes" in accepted:
        args["num_classes"] = num_classes  # a head of the data's classes, when it takes one
    specs.check_signature(make, [], args, "model.args")
    try:
        model = make(**args)
    except Exception as exc:
        raise ConfigError(
            f"model.python: {cfg.net}(**model.args) failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.python: {cfg.net} returned a {type(model).__name__}, not an nn.Module")
    return model


SOURCE = ModelSource(
    check=lambda cfg, path: parse(cfg.python, path),
    build=build_python,
    describe=lambda cfg: str(cfg.net),
)
