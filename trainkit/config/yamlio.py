"""Reading YAML safely: `yaml.SafeLoader` only, with alias-bomb and depth guards and file:line:col on errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainkit.errors import ConfigError
from trainkit.text import join_key

MAX_NODES = 100_000
MAX_DEPTH = 64


MAX_BYTES = 1_000_000  # a config file larger than this is refused before it is parsed


class LineLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats: `1e-3` and `5E4` are numbers, not the strings YAML 1.1 makes
    them; and counts the nodes as it composes them, so a huge flow list is refused before it is all in memory."""

    composed = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.composed += 1
        if self.composed > MAX_NODES:
            raise ConfigError(f"{self.name}: the document holds more than {MAX_NODES} values; a config is smaller")
        return super().compose_node(parent, index)


LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _guard(node: yaml.Node, where: str) -> None:
    """Refuse alias bombs and absurd nesting before constructing anything."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nesting deeper than {MAX_DEPTH} levels; flatten the config")
        if id(n) in sizes:
            return sizes[id(n)]
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c, depth + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            _no_duplicates(n, where)
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        if total > MAX_NODES:
            raise ConfigError(
                f"{where}: the document expands to more than {MAX_NODES} values (an alias bomb?); "
                "write it without nested aliases"
            )
        sizes[id(n)] = total
        return total

    size(node, 0)


def _no_duplicates(node: yaml.MappingNode, where: str) -> None:
    """A key given twice is refused: YAML keeps the last silently (a second `train:` replaced the first whole)."""
    seen: dict[Any, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise ConfigError(
                f"{where}:{line}: key {key.value!r} is given twice (lines {seen[key.value]} and {line}); keep one"
            )
        seen[key.value] = line


def check_budget(value: Any, where: str) -> None:
    """The size and depth budget of a YAML document, for plain data read elsewhere (a checkpoint's config):
    shared references count once per use, so a few hundred bytes cannot stand for 10^10 items."""
    count = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            what = f"more than {MAX_NODES} values" if count > MAX_NODES else f"deeper than {MAX_DEPTH} levels"
            raise ConfigError(f"{where}: too large: it holds {what}")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def _lines(node: yaml.Node, path: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            sub = join_key(path, str(k.value))
            out.setdefault(sub, k.start_mark.line + 1)
            _lines(v, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            out.setdefault(sub, item.start_mark.line + 1)
            _lines(item, sub, out)


def parse_yaml(text: str, where: str, lines: dict[str, int] | None = None) -> Any:
    """`yaml.safe_load` with the file's name, line and column on every error."""
    loader = None
    try:
        loader = LineLoader(text)
        loader.name = where
        node = loader.get_single_node()
        if node is None:
            return None
        _guard(node, where)
        if lines is not None:
            _lines(node, "", lines)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in problem:
            problem = f"unsupported tag {exc.problem.split('tag ')[-1].strip()}: trainkit reads plain YAML only"
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise ConfigError(f"{loc}: YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            f"{where}: YAML error: character {exc.character!r} at position {exc.position} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: YAML error: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nesting too deep to read; flatten the config") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: Path, what: str, flag: str) -> tuple[Any, dict[str, int]]:
    """A YAML file of trainkit's (a config, a sweep's space): its value and each key's line. A missing,
    unreadable or oversized file is one line that names `what` it is and the `flag` that gave it."""
    try:
        if path.is_file() and path.stat().st_size > MAX_BYTES:
            raise ConfigError(
                f"{path}: the {what} file is {path.stat().st_size:,} bytes; trainkit reads {what} files of up to "
                f"{MAX_BYTES:,} bytes (a {what} is a few hundred lines at most)"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found; check the path given to {flag}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} file: {exc}") from None
    lines: dict[str, int] = {}
    return parse_yaml(text, str(path), lines), lines
