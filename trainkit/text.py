"""Words and numbers for people: the helpers every message, table and progress line shares (below
everything, so that errors, sinks and commands format alike)."""

from __future__ import annotations

import difflib
import math
from typing import Any


def suggest(name: str, candidates: list[str] | set[str], n: int = 3) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidates, or ``""``."""
    lowered = {c.lower(): c for c in candidates}
    if name.lower() in lowered:
        close = [lowered[name.lower()]]
    else:
        close = difflib.get_close_matches(name, sorted(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`1 file`, `2 files` (`many` where the plural is not noun + s)."""
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"


def some(items: list[Any], n: int = 5) -> str:
    """`a, b, c, d, e and 999,995 more`: a list in a message stays short."""
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" and {len(items) - n:,} more" if len(items) > n else "")


MAX_LINE = 2000  # an error line longer than this is cut: a value from a file can be of any size


def one_line(text: str) -> str:
    """An error as one line of bounded length."""
    line = " ".join(text.split())
    return (
        line
        if len(line) <= MAX_LINE
        else f"{line[: MAX_LINE - 100]} ... ({len(line) - MAX_LINE + 100:,} more characters)"
    )


def describe(value: Any) -> str:
    """Short description of a user value for an error message."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def printable(text: str) -> str:
    """`text` with newlines and other control characters escaped, so a message stays one line."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def join_key(path: str, key: str) -> str:
    """`path.key`, or `key` at the top level."""
    return f"{path}.{key}" if path else str(key)


def flat_keys(node: Any, prefix: str = "", out: dict[str, Any] | None = None, limit: int = 5_000) -> dict[str, Any]:
    """A nested mapping as dotted keys (`optim.lr`); a list is one value. More than `limit` keys: ValueError
    (a file that is not a config)."""
    out = {} if out is None else out
    if isinstance(node, dict) and node:
        for key, value in node.items():
            flat_keys(value, join_key(prefix, key), out, limit)
            if len(out) > limit:
                raise ValueError(f"more than {limit} keys")
    elif prefix:
        out[prefix] = node
    return out


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (its type's name when it has none): a library's long message
    quoted inside one of trainkit's lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fmt_pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals; `-` for none."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def fmt_metric(name: str, x: float | None) -> str:
    """A metric as the epoch lines show it: accuracies in percent, losses with four decimals."""
    if "acc" in name:
        return fmt_pct(x)
    return "-" if x is None else f"{x:.4f}"


def width(text: str) -> int:
    """The columns `text` takes in a terminal: East Asian wide and fullwidth characters take two, combining
    marks none."""
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def ljust(text: str, columns: int) -> str:
    """`str.ljust` by display width (a class name in 日本語 lines up with the others)."""
    return text + " " * max(0, columns - width(text))


def rjust(text: str, columns: int) -> str:
    return " " * max(0, columns - width(text)) + text


def clip(text: str, columns: int) -> str:
    """`text` cut to `columns` display columns, with an ellipsis where it was cut."""
    if width(text) <= columns:
        return text
    out = ""
    for c in text:
        if width(out + c) > columns - 1:
            break
        out += c
    return out + "…"


def columns(rows: list[list[str]] | list[tuple[str, ...]], gap: str = "  ") -> str:
    """Rows of cells as aligned columns (by display width), the first row the header; trailing spaces cut."""
    n = max((len(r) for r in rows), default=0)
    widths = [max((width(r[i]) for r in rows if i < len(r)), default=0) for i in range(n)]
    return "\n".join(gap.join(ljust(c, w) for c, w in zip(r, widths)).rstrip() for r in rows)
