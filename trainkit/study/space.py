"""A sweep's space file: config keys, as `--set` names them, mapped to distributions, checked at start.

    optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
    optim.type: {choice: [SGD, AdamW]}

Each value becomes a `--set KEY=VALUE` item of the trial's config. `check_space` builds the base config with
each range's ends and each choice (the other keys at their first value), so a space that can make an
invalid config is refused before any trial starts, naming the key and the value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainkit.config.yamlio import read_yaml_file
from trainkit.errors import ConfigError
from trainkit.text import describe, first_line, suggest

KINDS = {  # name -> what it takes, in words
    "uniform": "[low, high]: a float between them",
    "loguniform": "[low, high], low > 0: a float between them on a log scale",
    "int": "[low, high]: an integer from low to high",
    "logint": "[low, high], low >= 1: an integer from low to high on a log scale",
    "choice": "[a, b, ...]: one of the values",
}


@dataclass(frozen=True)
class Param:
    key: str  # the config key, as --set names it
    kind: str  # a KINDS name
    values: tuple[Any, ...]  # (low, high), or the choices
    where: str  # FILE:LINE

    def suggest(self, trial: Any) -> Any:
        """This key's value in an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        low, high = self.values
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.key, low, high, log=self.kind == "logint")
        return trial.suggest_float(self.key, low, high, log=self.kind == "loguniform")

    def ends(self) -> tuple[Any, ...]:
        """The values `check_space` tries: a range's ends, every choice."""
        return self.values

    def canonical(self) -> list[Any]:
        return [self.kind, list(self.values)]


def setting(key: str, value: Any) -> str:
    """A `--set` item: JSON is YAML's flow form, so the value is read back as it was."""
    return f"{key}={json.dumps(value)}"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _param(key: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            f"{where}: {key}: expected one distribution such as {{loguniform: [1.0e-4, 1.0e-1]}} or "
            f"{{choice: [SGD, AdamW]}}, got {describe(spec)}"
        )
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        raise ConfigError(
            f"{where}: {key}: unknown distribution {kind!r}{suggest(str(kind), list(KINDS))}; use one of {', '.join(KINDS)}"
        )
    if not isinstance(values, list):
        raise ConfigError(f"{where}: {key}: {kind} takes {KINDS[kind]}, got {describe(values)}")
    if kind == "choice":
        if not values:
            raise ConfigError(f"{where}: {key}: an empty choice; give at least one value")
        bad = next((v for v in values if not (v is None or isinstance(v, (str, bool)) or _number(v))), "none")
        if bad != "none":
            raise ConfigError(f"{where}: {key}: a choice holds numbers, strings, booleans or null, got {describe(bad)}")
        if len({json.dumps(v) for v in values}) < len(values):
            raise ConfigError(f"{where}: {key}: a value is given twice in the choice; keep one")
        return Param(key, kind, tuple(values), where)
    if len(values) != 2 or not all(_number(v) for v in values):
        raise ConfigError(f"{where}: {key}: {kind} takes {KINDS[kind]}, got {values!r}")
    low, high = values
    if kind in ("int", "logint") and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{where}: {key}: {kind} takes integers, got {values!r}; use uniform for floats")
    if not low < high:
        raise ConfigError(f"{where}: {key}: an empty range {values!r}; low must be below high")
    if kind in ("loguniform", "logint") and low <= 0:
        raise ConfigError(f"{where}: {key}: {kind} needs low > 0 (a log scale), got {low!r}")
    if kind in ("uniform", "loguniform"):
        low, high = float(low), float(high)
    return Param(key, kind, (low, high), where)


def read_space(path: str | Path) -> list[Param]:
    """The space file's distributions, in its order; a bad entry is one line with FILE:LINE."""
    path = Path(path)
    raw, lines = read_yaml_file(path, "space", "--space")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{path}: a space maps config keys to distributions, e.g. 'optim.lr: {{loguniform: [1.0e-4, 1.0e-1]}}'; "
            f"got {describe(raw)}"
        )
    out = []
    for key, spec in raw.items():
        where = f"{path}:{lines.get(str(key), 1)}"
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: a key of the space is {describe(key)}; give a config key such as optim.lr")
        out.append(_param(key, spec, where))
    return out


def check_space(base: str, overrides: list[str], space: list[Param]) -> None:
    """Build the base config with each value `ends` gives, the other keys at their first value: a key the
    config does not have, or a value it refuses, is one line naming the key and the value."""
    from trainkit.run.config import load_config

    first = [setting(p.key, p.values[0]) for p in space]
    for i, p in enumerate(space):
        for value in p.ends():
            trial = [*first[:i], setting(p.key, value), *first[i + 1 :]]
            try:
                load_config(base, [*overrides, *trial])
            except ConfigError as exc:
                raise ConfigError(
                    f"{p.where}: {p.key}={json.dumps(value)} makes an invalid config: {first_line(exc)}"
                ) from None


def grid(space: list[Param]) -> dict[str, list[Any]]:
    """The search space of `--sampler grid`: every key a choice."""
    ranged = [p for p in space if p.kind != "choice"]
    if ranged:
        p = ranged[0]
        raise ConfigError(
            f"{p.where}: --sampler grid tries every combination: {p.key} is {p.kind}; give it as a choice"
        )
    return {p.key: list(p.values) for p in space}
