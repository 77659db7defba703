"""The run directory: resume targets, one writer at a time, and a failed run removes only what it wrote."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_user_error, run_cli, tiny_config

from trainkit.errors import RunDirError, TrainingError
from trainkit.run import config
from trainkit.run import loop as engine
from trainkit.run.build import build_run
from trainkit.sinks.base import Sink
from trainkit.store.rundir import LOCK_NAME, RunLock


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_resuming_a_copied_run_writes_into_the_copy_and_says_so(tmp_path, tiny_cfg_path):
    assert run_cli("train", "--config", str(tiny_cfg_path)).returncode == 0
    original, copy = tmp_path / "run", tmp_path / "run-copy"
    shutil.copytree(original, copy)
    before = snapshot(original)
    proc = run_cli("train", "--resume", str(copy / "last.pt"), "--set", "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(original) == before  # the original's last.pt and metrics.jsonl are untouched
    assert [r["epoch"] for r in _records(copy)] == [1, 2, 3]
    said = [ln for ln in proc.stderr.splitlines() if "continuing in" in ln]
    assert len(said) == 1 and str(copy) in said[0] and str(original) in said[0], proc.stderr
    # --run-dir still chooses
    elsewhere = tmp_path / "elsewhere"
    proc = run_cli("train", "--resume", str(copy / "last.pt"), "--set", "train.epochs=4", "--run-dir", str(elsewhere))
    assert proc.returncode == 0, proc.stderr
    assert [r["epoch"] for r in _records(elsewhere)] == [4] and len(_records(copy)) == 3


def _records(folder: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_resume_with_nothing_to_resume_starts_a_new_run(tmp_path, tiny_cfg_path):
    proc = run_cli("train", "--config", str(tiny_cfg_path), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "holds no run yet: starting a new one" in proc.stderr
    assert (tmp_path / "run" / "last.pt").is_file()
    # an explicit path that does not exist stays an error
    assert_user_error(run_cli("train", "--resume", str(tmp_path / "nope.pt")), "nope.pt: checkpoint not found")


def test_resume_of_a_finished_run_is_complete_and_rewrites_nothing(tmp_path, tiny_cfg_path):
    assert run_cli("train", "--config", str(tiny_cfg_path)).returncode == 0
    run_dir = tmp_path / "run"
    before, mtimes = snapshot(run_dir), {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    proc = run_cli("train", "--config", str(tiny_cfg_path), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "already complete (2 of 2 epochs)" in proc.stdout
    assert snapshot(run_dir) == before
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == mtimes


class WritesBeside(Sink):
    """Another run writing its checkpoint beside this one while this one trains (as a sweep's trials do)."""

    def __init__(self, other: Path) -> None:
        self.other = other

    def begin_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.other.mkdir(parents=True, exist_ok=True)
        (self.other / "last.pt").write_bytes(b"trial a")


def diverged(run_dir: Path, tiny_data: Path):
    """A run whose model is diverged, for real: it fails in its first epoch, before its first checkpoint."""
    run = build_run(config.from_dict(tiny_config(tiny_data, run_dir)))
    with torch.no_grad():
        run.model[-1].weight.fill_(float("nan"))
    return run


def test_a_failed_run_never_removes_another_runs_files(tmp_path, tiny_data):
    sweep = tmp_path / "runs" / "sweep"
    run = diverged(sweep / "b", tiny_data)
    assert (sweep / "b" / LOCK_NAME).is_file()  # the lock is taken at start
    run.sinks.sinks.append(WritesBeside(sweep / "a"))
    with pytest.raises(TrainingError, match="loss became"):
        engine.fit(run)
    assert (sweep / "a" / "last.pt").read_bytes() == b"trial a"
    assert not (sweep / "b").exists()  # its own folder, which it created and left empty, is gone


def test_a_failed_run_removes_the_folders_it_created_when_they_are_empty(tmp_path, tiny_data):
    with pytest.raises(TrainingError):
        engine.fit(diverged(tmp_path / "new" / "deeper" / "run", tiny_data))
    assert not (tmp_path / "new").exists()


def _start_training(cfg_path: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    """A run that lasts: many epochs of the tiny config; returns once it holds the run directory's lock."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", "--config", str(cfg_path), "--set", "train.epochs=2000", *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "last.pt").is_file() or _holder(run_dir) != str(proc.pid):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return proc


def _holder(run_dir: Path) -> str:
    try:
        return (run_dir / LOCK_NAME).read_text().strip()
    except FileNotFoundError:
        return ""


@pytest.mark.slow
@pytest.mark.parametrize("flags", [(), ("--resume",), ("--overwrite",)], ids=["plain", "resume", "overwrite"])
def test_one_writer_per_run_directory(tmp_path, tiny_cfg_path, flags):
    run_dir = tmp_path / "run"
    first = _start_training(tiny_cfg_path, run_dir, *flags)
    try:
        proc = run_cli("train", "--config", str(tiny_cfg_path), "--set", "train.epochs=2000", *flags)
        assert_user_error(proc, f"run_dir {run_dir} is in use by another trainkit run (pid {first.pid})")
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(60)
    assert first.returncode == 143
    # the lock of a process killed with -9 is taken over
    second = _start_training(tiny_cfg_path, run_dir, "--resume")
    second.kill()
    second.wait()
    assert (run_dir / LOCK_NAME).is_file()
    proc = run_cli("train", "--config", str(tiny_cfg_path), "--overwrite", "--set", "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    assert not (run_dir / LOCK_NAME).exists()  # a run that ends removes its lock


def test_eval_works_while_the_run_holds_its_lock(tmp_path, tiny_cfg_path):
    run_dir = tmp_path / "run"
    first = _start_training(tiny_cfg_path, run_dir)
    try:
        for _ in range(3):
            proc = run_cli("eval", "--ckpt", str(run_dir / "last.pt"), "--out", str(tmp_path / "e.json"))
            assert proc.returncode == 0, proc.stderr
    finally:
        first.kill()
        first.wait()


def test_the_lock_names_its_holder_and_a_stale_file_is_taken_over(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text("424242\n")  # left by a dead process: no lock is held on it
    lock = RunLock(run_dir).acquire()  # (reading the file here would drop the lock: POSIX locks end at any close)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from trainkit.store.rundir import RunLock; RunLock(__import__('pathlib').Path({str(run_dir)!r})).acquire()",
        ],
        capture_output=True,
        text=True,
    )
    assert f"in use by another trainkit run (pid {os.getpid()})" in child.stderr
    lock.release()
    assert not (run_dir / LOCK_NAME).exists()
    (run_dir / "a-file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        RunLock(run_dir / "a-file").acquire()


def test_a_run_file_that_cannot_be_written_is_one_line(tmp_path, tiny_cfg_path):
    assert run_cli("train", "--config", str(tiny_cfg_path), "--set", "train.epochs=1").returncode == 0
    run_dir = tmp_path / "run"
    (run_dir / "config.yaml").unlink()
    (run_dir / "config.yaml").mkdir()  # where the file goes: writing it fails as a full disk would (OSError)
    before = (run_dir / "last.pt").read_bytes()
    proc = run_cli("train", "--config", str(tiny_cfg_path), "--resume")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"could not write the run's files in {run_dir}" in proc.stderr
    assert (run_dir / "last.pt").read_bytes() == before  # the last checkpoint is kept


@pytest.fixture
def read_only(tmp_path):
    """Makes a folder read-only for everyone, root too (a read-only bind mount of it over itself)."""
    mounted = []

    def make(folder: Path) -> None:
        proc = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"no read-only bind mount here: {proc.stderr.decode()[-200:]}")
        mounted.append(folder)

    yield make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_read_only_run_directory_is_one_line_at_start(tmp_path, tiny_cfg_path, read_only, flag):
    assert run_cli("train", "--config", str(tiny_cfg_path), "--set", "train.epochs=1").returncode == 0
    run_dir = tmp_path / "run"
    before = snapshot(run_dir)
    read_only(run_dir)
    proc = run_cli("train", "--config", str(tiny_cfg_path), flag)
    assert_user_error(proc, f"run_dir {run_dir}: cannot write in it (Read-only file system)")
    assert "epoch 1/" not in proc.stdout and "epoch 2/" not in proc.stdout  # refused before any training
    assert snapshot(run_dir) == before
