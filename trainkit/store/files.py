"""The one way trainkit writes a file: into a temporary beside it, fsync'd, moved over it, the folder fsync'd.

A reader (or a crash) sees the previous file or the new one, never half of one; on any failure the
temporary is removed and the previous file is untouched. Checkpoints, predictions, features, exports,
caches, the visdom cookie secret and metrics.csv all go through `atomic_path`.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def temporary_name(path: Path, keep_suffix: bool = False) -> Path:
    """`.NAME.tmp-PID` beside `path` (with `path`'s suffix again when a reader goes by it: ONNX, .pt2)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}" + (path.suffix if keep_suffix else ""))


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
    killed mid-write left beside `path` are removed after a successful write.
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
    for stale in glob.glob(glob.escape(str(path.with_name(f".{path.name}.tmp-"))) + "*"):
        with contextlib.suppress(OSError):
            os.unlink(stale)


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
