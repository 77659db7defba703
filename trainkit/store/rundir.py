"""The run directory: one writer at a time (`RunLock`), never silently overwritten, and what a failed run
wrote removed, but only that (`RunFiles`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainkit.errors import RunDirError, TrainingError
from trainkit.store.files import atomic_path, write_text_atomic
from trainkit.store.status import LOCK_NAME, STATUS_FILE, read_jsonl
from trainkit.text import some


def truncate_jsonl(path: Path, epochs: int) -> None:
    """Keep the records of the first `epochs` epochs: the ones a resumed checkpoint has seen."""
    kept = [r for r in read_jsonl(path) if r.get("epoch", 0) <= epochs]
    if path.exists():
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))  # a crash keeps the whole file


RUN_FILES = (
    "config.yaml", "metrics.jsonl", "steps.jsonl", "last.pt", "best.pt", "samples.png", "eval.json", "split.json", "test.json",
    STATUS_FILE,
)  # fmt: skip
TOP_K_FILES = "epoch=*.pt"  # train.save_top_k's checkpoints


def rank_top_k(
    top_k: list[dict[str, Any]], record: dict[str, Any], monitor: str, mode: str, k: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]]:
    """train.save_top_k: the k best after this epoch (best first; among equals the newest first, so the oldest
    worst goes), this epoch's entry when it makes it (None: no monitored value, or not among them), and the
    entries it pushes out. k = -1 keeps all."""
    value = record.get(monitor)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return top_k, None, []
    entry = {"value": value, "epoch": record["epoch"], "file": f"epoch={record['epoch']:03d}-{monitor}={value:.4f}.pt"}
    sign = -1.0 if mode == "max" else 1.0
    ranked = sorted([*top_k, entry], key=lambda e: (sign * e["value"], -e["epoch"]))
    k = k if k > 0 else len(ranked)
    if entry not in ranked[:k]:
        return top_k, None, []
    return ranked[:k], entry, ranked[k:]


def contents(path: Path) -> list[str]:
    """The names in a run directory, the lock left aside (a folder that holds only the lock is empty)."""
    try:
        return sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME)
    except (FileNotFoundError, NotADirectoryError):
        return []


def prepare_run_dir(path: Path, resume: bool, overwrite: bool) -> None:
    """A non-empty run directory is never silently overwritten (--overwrite replaces it at the first checkpoint)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {path} is a file; choose another --run-dir")
    held = contents(path)
    if held and not resume and not overwrite:
        names = some(held)
        raise RunDirError(
            f"run_dir {path} is not empty (holds {names}); pass --resume to continue it, "
            "--overwrite to replace its trainkit files, or --run-dir for a new one"
        )


def _missing(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist, deepest first."""
    out = []
    while not path.exists():
        out.append(path)
        path = path.parent
    return out


class RunLock:
    """An exclusive `fcntl` lock on `RUN_DIR/.trainkit.lock`, held for the whole run by the one process that
    writes it (rank 0 under DDP). The kernel drops it when its process dies, so a killed run's lock is taken
    over by the next run. `created` are the folders this process made for the run, deepest first.

    A POSIX record lock (`lockf`), not `flock`: it is not inherited by forked DataLoader workers (which would
    hold the run after its process died), and a process may take again what it holds (in-process tests).
    Nothing else in the process may open the lock file: POSIX drops the lock at any close of it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.path = run_dir, run_dir / LOCK_NAME
        self.created: list[Path] = []
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"run_dir {self.run_dir} is a file; choose another --run-dir")
        for folder in reversed(_missing(self.run_dir)):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # another process made it: not ours to remove
            except OSError as exc:
                self.abandon()
                raise RunDirError(f"run_dir {self.run_dir}: cannot create it: {exc.strerror}") from None
            self.created.insert(0, folder)
        while self.fd is None:
            self._try_lock()
        return self

    def _try_lock(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self.abandon()
            raise RunDirError(
                f"run_dir {self.run_dir}: cannot write in it ({exc.strerror}); make it writable or choose another "
                "--run-dir"
            ) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"run_dir {self.run_dir} is in use by another trainkit run (pid {holder}); wait for it to end, "
                "stop it, or choose another --run-dir"
            ) from None
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed the file as we opened it: lock the new one
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (a run that ends)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    def abandon(self) -> None:
        """Release, and remove the folders this process created for the run while they hold nothing."""
        self.release()
        for folder in self.created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # fails, and keeps it, when anything is inside: another run's files
        self.created = []


class RunFiles:
    """Writes to the run directory wait for the run's first checkpoint.

    So a run that fails before it (a bad image in the first epoch, a diverging loss) leaves the run directory
    as it found it, and the same command runs again: `discard` removes the trainkit files and sink folders
    that were not there at the start (written by this run, which holds the directory's lock), and the folders
    the run created while they hold nothing else. An existing run's files are not touched, also with --resume
    or --overwrite.
    """

    def __init__(
        self,
        run_dir: Path,
        overwrite: bool,
        resolved: str,
        grid: torch.Tensor | None,
        epochs_kept: int,
        lock: RunLock | None = None,
        sink_files: tuple[str, ...] = (),
        texts: dict[str, str] | None = None,
    ) -> None:
        self.run_dir, self.overwrite, self.resolved, self.grid = run_dir, overwrite, resolved, grid
        self.texts = texts or {}  # more files of the run, by name (split.json)
        self.epochs_kept = epochs_kept  # the epochs of the checkpoint the run starts from
        self.lock = lock
        self.sink_files = sink_files  # what the sinks write (`sinks.table.files()`): metrics.csv, tb/
        self.before = set(contents(run_dir))
        self.done = False

    def discard(self) -> None:
        """The run ends before its first checkpoint: remove what it wrote, and only that."""
        if self.done:
            return
        for name in (*RUN_FILES, *self.sink_files):
            path = self.run_dir / name
            if name not in self.before and path.exists():
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.abandon()

    def commit(self) -> None:
        """Create the folder; write the resolved config and the sample grid; cut metrics.jsonl back to the
        epochs of the checkpoint the run started from (whichever one it was), and steps.jsonl with it."""
        if self.done:
            return
        try:
            self._write()
        except OSError as exc:  # a full disk, a read-only folder: one line, and the previous files are kept
            raise TrainingError(
                f"could not write the run's files in {self.run_dir} ({exc.strerror or exc}: {exc.filename}); "
                "free some space or make it writable, then run the same command again"
            ) from None
        self.done = True

    def _write(self) -> None:
        d = self.run_dir
        d.mkdir(parents=True, exist_ok=True)
        if self.overwrite:  # --overwrite: the previous run's trainkit files go now, and only now
            for path in [d / name for name in (*RUN_FILES, *self.sink_files)] + list(d.glob(TOP_K_FILES)):
                if not path.is_dir():  # a sink's folder (tb/) is kept: TensorBoard reads runs side by side
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        write_text_atomic(d / "config.yaml", self.resolved)
        for name, text in self.texts.items():
            write_text_atomic(d / name, text)
        truncate_jsonl(d / "metrics.jsonl", self.epochs_kept)
        truncate_jsonl(d / "steps.jsonl", self.epochs_kept)
        if self.grid is not None:
            from torchvision.utils import save_image

            with atomic_path(d / "samples.png", keep_suffix=True) as tmp:  # the suffix names the format
                save_image(self.grid, tmp)


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
    from trainkit.store.checkpoint import load_checkpoint

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
        run_dir=run_dir,
        config_text=(run_dir / "config.yaml").read_text(encoding="utf-8"),
        records=records,
        steps=read_jsonl(run_dir / "steps.jsonl"),
        classes=classes,
        confusion=confusion,
        confusion_source=source,
        checkpoint=ckpt,
    )
