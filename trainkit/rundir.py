"""The run directory: never silently overwritten, and left untouched until a run has something to save."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from trainkit.errors import RunDirError


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


def truncate_jsonl(path: Path, epochs: int) -> None:
    """Keep the records of the first `epochs` epochs: the ones a resumed checkpoint has seen."""
    kept = [r for r in read_jsonl(path) if r.get("epoch", 0) <= epochs]
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "samples.png", "eval.json")


def prepare_run_dir(path: Path, resume: bool, overwrite: bool, create: bool = True) -> None:
    """A non-empty run directory is never silently overwritten (--overwrite replaces it at the first checkpoint)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {path} is a file; choose another --run-dir")
    if path.is_dir() and any(path.iterdir()) and not resume:
        if not overwrite:
            held = ", ".join(sorted(p.name for p in path.iterdir())[:5])
            raise RunDirError(
                f"run_dir {path} is not empty (holds {held}); pass --resume to continue it, "
                "--overwrite to replace its trainkit files, or --run-dir for a new one"
            )
    if not create:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"run_dir {path}: cannot create it: {exc.strerror}") from None


class RunFiles:
    """Writes to the run directory wait for the first checkpoint of this process, unless the folder was empty.

    So a run that fails early (a bad image in the first epoch, a shape error) leaves an existing run
    directory exactly as it was, also with --resume or --overwrite.
    """

    def __init__(self, run_dir: Path, overwrite: bool, resolved: str, grid: torch.Tensor | None) -> None:
        self.run_dir, self.overwrite, self.resolved, self.grid = run_dir, overwrite, resolved, grid
        self.done = False

    def commit(self, epoch: int) -> None:
        """Write the resolved config and the sample grid; `metrics.jsonl` keeps the records up to `epoch`."""
        if self.done:
            return
        d = self.run_dir
        if self.overwrite:  # --overwrite: the previous run's trainkit files go now, and only now
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (d / name).unlink()
        (d / "config.yaml").write_text(self.resolved, encoding="utf-8")
        truncate_jsonl(d / "metrics.jsonl", epoch)
        if self.grid is not None:
            from torchvision.utils import save_image

            save_image(self.grid, d / "samples.png")
        self.done = True
