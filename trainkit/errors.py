"""User-facing error types, one per area (`cli` maps each to exit code 2), and the helpers their messages share."""

from __future__ import annotations

import os

from trainkit.text import printable


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
