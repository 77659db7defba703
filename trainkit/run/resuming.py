"""Where `train --resume` continues, and whether anything is left to do.

- An explicit checkpoint continues in the folder that holds it (its stored `run_dir` is someone's old path:
  a copied run must not write into the original), unless `--run-dir` says otherwise.
- A bare `--resume` on a run directory that is absent or empty starts a new run (the command a preemptible
  job repeats, as Lightning's `ckpt_path="last"`); an explicit path that does not exist stays an error.
- A finished run is left as it is: "already complete".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainkit.run.config import Config
from trainkit.store import checkpoint
from trainkit.store.rundir import contents


@dataclass(frozen=True)
class ResumePoint:
    path: Path | None  # the checkpoint to continue from; None: a new run
    ckpt: dict[str, Any] | None
    done: str | None = None  # the run is complete: why, in words


def folder_override(resume: str | None, run_dir: str | None) -> str | None:
    """The run directory a command writes to: `--run-dir`, else the folder of an explicit `--resume CKPT`."""
    if run_dir:
        return run_dir
    return str(Path(resume).parent) if resume else None


def moved_note(ckpt: dict[str, Any], path: str, folder: Path) -> str | None:
    """One line when the checkpoint's stored run_dir is not the folder that holds it (a copied or moved run)."""
    stored = ckpt["config"].get("run_dir")
    if not isinstance(stored, str) or Path(stored).resolve() == folder.resolve():
        return None
    return (
        f"--resume {path}: continuing in {folder}, the folder that holds it, not in {stored}, the run_dir its "
        "config names (give --run-dir to choose another)"
    )


def resume_point(cfg: Config, resume: str | None, ckpt: dict[str, Any] | None, notes: list[str]) -> ResumePoint:
    """`resume` is None (no --resume), "" (the run directory's last.pt) or a checkpoint's path."""
    if resume is None:
        return ResumePoint(None, None)
    path = Path(resume) if resume else cfg.run_path / "last.pt"
    if not resume and not path.is_file() and not contents(cfg.run_path):
        notes.append(f"--resume: {cfg.run_path} holds no run yet: starting a new one")
        return ResumePoint(None, None)
    if ckpt is None:
        ckpt = checkpoint.read_checkpoint(path, resume=True)
    return ResumePoint(path, ckpt, _complete(cfg, ckpt))


def _complete(cfg: Config, ckpt: dict[str, Any]) -> str | None:
    epoch, epochs = int(ckpt["epoch"]), cfg.train.epochs
    if int(ckpt.get("batch") or 0):
        return None  # stopped mid-epoch
    if epoch >= epochs:
        return f"already complete ({epoch} of {epochs} epochs)"
    es, state = cfg.train.early_stopping, ckpt.get("early_stopping") or {}
    if es is not None and int(state.get("bad_epochs") or 0) >= es.patience:
        return f"already complete (stopped early at epoch {epoch} of {epochs}: {es.monitor} did not improve)"
    return None
