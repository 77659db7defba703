"""The run directory: never silently overwritten, and left untouched until a run has something to save."""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
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


RUN_FILES = ("config.yaml", "metrics.jsonl", "steps.jsonl", "last.pt", "best.pt", "samples.png", "eval.json")


def prepare_run_dir(path: Path, resume: bool, overwrite: bool, probe: bool = True) -> None:
    """A non-empty run directory is never silently overwritten (--overwrite replaces it at the first checkpoint).

    It is not created here: `RunFiles` creates it at the run's first checkpoint.
    """
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {path} is a file; choose another --run-dir")
    if path.is_dir() and any(path.iterdir()) and not resume:
        if not overwrite:
            held = ", ".join(sorted(p.name for p in path.iterdir())[:5])
            raise RunDirError(
                f"run_dir {path} is not empty (holds {held}); pass --resume to continue it, "
                "--overwrite to replace its trainkit files, or --run-dir for a new one"
            )
    if not probe or path.exists():
        return
    missing = _missing(path)
    try:  # can it be made? found now, not after an epoch; nothing is left behind
        path.mkdir(parents=True)
    except OSError as exc:
        raise RunDirError(f"run_dir {path}: cannot create it: {exc.strerror}") from None
    for folder in missing:
        folder.rmdir()


def _missing(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist, deepest first."""
    out = []
    while not path.exists():
        out.append(path)
        path = path.parent
    return out


class RunFiles:
    """Writes to the run directory wait for the run's first checkpoint.

    So a run that fails before it (a bad image in the first epoch, a diverging loss) leaves the run directory
    as it found it, and the same command runs again: `discard` removes what a sink wrote meanwhile from a
    folder that was absent or empty at the start; an existing run's files are not touched, also with
    --resume or --overwrite.
    """

    def __init__(
        self, run_dir: Path, overwrite: bool, resolved: str, grid: torch.Tensor | None, epochs_kept: int
    ) -> None:
        self.run_dir, self.overwrite, self.resolved, self.grid = run_dir, overwrite, resolved, grid
        self.epochs_kept = epochs_kept  # the epochs of the checkpoint the run starts from
        self.new = _missing(run_dir)[-1:]  # the top folder this run would create
        self.was_empty = not run_dir.exists() or not any(run_dir.iterdir())
        self.done = False

    def discard(self) -> None:
        """The run ends before its first checkpoint: remove what it wrote to an absent or empty run directory."""
        if self.done:
            return
        if self.new:
            shutil.rmtree(self.new[0], ignore_errors=True)
        elif self.was_empty:
            for child in self.run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def commit(self) -> None:
        """Create the folder; write the resolved config and the sample grid; cut metrics.jsonl back to the
        epochs of the checkpoint the run started from (whichever one it was), and steps.jsonl with it."""
        if self.done:
            return
        d = self.run_dir
        d.mkdir(parents=True, exist_ok=True)
        if self.overwrite:  # --overwrite: the previous run's trainkit files go now, and only now
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (d / name).unlink()
        (d / "config.yaml").write_text(self.resolved, encoding="utf-8")
        truncate_jsonl(d / "metrics.jsonl", self.epochs_kept)
        truncate_jsonl(d / "steps.jsonl", self.epochs_kept)
        if self.grid is not None:
            from torchvision.utils import save_image

            save_image(self.grid, d / "samples.png")
        self.done = True


@dataclass
class RunRecord:
    """What a finished (or stopped) run left in its folder, for `trainkit plot` and `trainkit report`."""

    run_dir: Path
    config_text: str
    records: list[dict[str, Any]]  # metrics.jsonl
    steps: list[dict[str, Any]]  # steps.jsonl (absent before this trainkit: empty)
    classes: list[str]
    confusion: list[list[int]] | None
    confusion_source: str  # where the confusion matrix comes from, in words
    checkpoint: dict[str, Any] | None  # best.pt, else last.pt

    @property
    def samples(self) -> Path | None:
        path = self.run_dir / "samples.png"
        return path if path.is_file() else None


def load_run(run_dir: Path) -> RunRecord:
    """A run directory's files; the confusion matrix from eval.json, else from the checkpoint's last epoch."""
    from trainkit.checkpoint import load_checkpoint

    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml); give the folder `trainkit train` wrote")
    records = read_jsonl(run_dir / "metrics.jsonl")
    if not records:
        raise RunDirError(f"{run_dir}: metrics.jsonl has no epochs")
    ckpt_path = next((p for p in (run_dir / "best.pt", run_dir / "last.pt") if p.is_file()), None)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    classes = list(ckpt["classes"]) if ckpt else []
    confusion, source = None, "none: the run has no eval.json, and its checkpoint holds no confusion matrix"
    evaluated = run_dir / "eval.json"
    if evaluated.is_file():
        result = json.loads(evaluated.read_text(encoding="utf-8"))
        confusion, classes = result["confusion"], result.get("classes", classes)
        source = f"{evaluated} (trainkit eval, epoch {result.get('epoch', '?')})"
    elif ckpt_path is not None and ckpt is not None:
        held_path = run_dir / "last.pt" if (run_dir / "last.pt").is_file() else ckpt_path  # the latest epoch
        held: dict[str, Any] = ckpt if held_path == ckpt_path else load_checkpoint(held_path)
        if isinstance(held.get("metrics", {}).get("confusion"), list):
            confusion = held["metrics"]["confusion"]
            source = f"{held_path} (epoch {held['epoch']})"
    return RunRecord(
        run_dir,
        (run_dir / "config.yaml").read_text(encoding="utf-8"),
        records,
        read_jsonl(run_dir / "steps.jsonl"),
        classes,
        confusion,
        source,
        ckpt,
    )
