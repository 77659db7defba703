"""The one way trainkit writes a file: into a temporary beside it, fsync'd, moved over it, the folder fsync'd.

A reader (or a crash) sees the previous file or the new one, never half of one; on any failure the
temporary is removed and the previous file is untouched. Checkpoints, predictions, features, exports,
caches, the visdom cookie secret and metrics.csv all go through `atomic_path`.

A temporary is named by its writer's host and pid. After a write, the temporaries a killed writer left
beside the file are removed: this host's whose process is gone, and another host's (a shared run folder)
once a day old. A live writer's temporary is never touched: two sweep processes write one best.yaml.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
FOREIGN_STALE_S = 24 * 3600  # another host's temporary is left alone for a day: its writer may still run


def temporary_name(path: Path, keep_suffix: bool = False) -> Path:
    """`.NAME.tmp-HOST-PID` beside `path` (with `path`'s suffix again when a reader goes by it: ONNX, .pt2)."""
    return path.with_name(f".{path.name}.tmp-{HOST}-{os.getpid()}" + (path.suffix if keep_suffix else ""))


def process_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this host (one that is not ours to signal counts as running)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _left_by_a_killed_writer(entry: os.DirEntry[str], prefix: str) -> bool:
    """Whether `entry`, a temporary of the file whose temporaries start with `prefix`, is one no writer holds."""
    m = re.fullmatch(r"(?:(?P<host>[A-Za-z0-9._]+)-)?(?P<pid>\d+)(\.[^-]*)?", entry.name[len(prefix) :])
    if m is None:
        return False  # not a name trainkit gives
    if m["host"] in (HOST, None):  # None: `.NAME.tmp-PID`, as trainkit named them before the host was in
        return int(m["pid"]) != os.getpid() and not process_alive(int(m["pid"]))
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > FOREIGN_STALE_S
    except OSError:
        return False


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries that killed writers left beside `path`; a running writer's stay."""
    prefix = f".{path.name}.tmp-"
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        if _left_by_a_killed_writer(entry, prefix):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's: its entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False, mode: int = 0o666) -> Iterator[Path]:
    """A temporary path to write `path`'s new contents to; when the block ends it replaces `path`.

    `mode` is the temporary's permission (0o600: readable by its owner only). Temporaries that a process
    killed mid-write left beside `path` are removed after a successful write; a live writer's are kept.
    """
    path = Path(path)
    tmp = temporary_name(path, keep_suffix)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync(path.parent)
    remove_stale_temporaries(path)


def write_atomic(path: str | Path, write: Callable[[IO[Any]], Any], binary: bool = False, mode: int = 0o666) -> None:
    """`write(file)` into a temporary beside `path`, then moved into place: never a half-written `path`."""
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "wb") if binary else open(tmp, "w", newline="", encoding="utf-8") as f:
            write(f)


def write_text_atomic(path: str | Path, text: str, mode: int = 0o666) -> None:
    write_atomic(path, lambda f: f.write(text), mode=mode)


def save_figure(fig: Any, path: str | Path) -> None:
    """A matplotlib figure as PNG (or whatever `path`'s suffix names), written atomically."""
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
