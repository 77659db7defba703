"""User-facing error types, one per area (`cli` maps each to exit code 2), and the helpers their messages share."""

from __future__ import annotations

import difflib
import os
from typing import Any


class TrainkitError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(TrainkitError):
    """A bad config file, `--set` override or command-line argument."""

    key: str | None = None  # the key path it is about, when known (for the file:line lookup)


class DataError(TrainkitError):
    """Missing, empty or undecodable data."""


class CheckpointError(TrainkitError):
    """A checkpoint that is missing, truncated, unsafe or of another model."""


class RunDirError(TrainkitError):
    """A run directory that would be overwritten, or cannot be written."""


class DeviceError(TrainkitError):
    """A device that does not exist on this machine."""


class TrainingError(Exception):
    """A runtime failure during training (NaN loss, a failed save): exit code 1."""

    exit_code = 1


# --------------------------------------------------------------------------- message helpers


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


MAX_COUNT = 2**31 - 1  # a batch size, an epoch count: torch's indices are 32-bit in places, and no run is larger


def check_count(value: int | None, key: str) -> None:
    if value is not None and value > MAX_COUNT:
        raise key_error(key, f"{value} is beyond what any run can use (at most {MAX_COUNT:,})")


def parallel_limit() -> int:
    """The most processes or threads a config may ask for: a few times the machine's CPUs."""
    return 4 * (os.cpu_count() or 1)


def check_parallel(value: int, key: str, what: str) -> None:
    limit = parallel_limit()
    if value > limit:
        raise key_error(
            key, f"{value} {what} is more than this machine can run (at most 4 x its {limit // 4} CPUs = {limit})"
        )


def key_error(path: str, message: str) -> ConfigError:
    """A ConfigError that knows the key path it is about (for line lookup)."""
    err = ConfigError(f"{printable(path)}: {message}" if path else message)
    err.key = path
    return err
