"""How a run stands, read from its folder without importing torch: `status.json` (written by the loop at its
first checkpoint and at its end), the lock's holder (a live process, or none), and the metrics records.

`status.json` holds `state` (running, finished, stopped, failed), `reason` for a stop (SIGINT, SIGTERM,
early stopping, NaN, pruned) or a failure (its error line), `epoch`, `started` (ISO time of the run's first
start), `wall_s` (summed over every session of the run, a resumed one included), `pid`, and `config`: the
resolved config of config.yaml as JSON (`trainkit runs` reads it in 0.1 ms, config.yaml in about 2 ms).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
from pathlib import Path
from typing import Any

from trainkit.store.files import write_text_atomic

STATUS_FILE = "status.json"
LOCK_NAME = ".trainkit.lock"  # held (fcntl) by the one process that writes the run; holds its PID


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (from a kill) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's status.json; {} when it has none (a run of an older trainkit) or it cannot be read."""
    try:
        held = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def save_status(run_dir: Path, status: dict[str, Any]) -> None:
    write_text_atomic(run_dir / STATUS_FILE, json.dumps(status, indent=1) + "\n")


# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (and padding)
_FLOCK = "hhqqi4x"


def lock_holder(run_dir: Path) -> int | None:
    """The PID of the live process that holds the run's lock, else None (no lock file, or its process died:
    the kernel dropped its lock). Asks with F_GETLK, which takes nothing: a run that starts now is not hindered."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        with contextlib.suppress(OSError):
            l_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
            return pid if l_type != fcntl.F_UNLCK else None
        return None
    finally:
        os.close(fd)
