"""End to end: the real `trainkit` command on real image files, in subprocesses."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_user_error, run_cli, tiny_config, write_yaml

FILES = {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "samples.png"}


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_train_then_eval_reproduces_the_best_epoch(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, run_dir, optim={"type": "SGD", "lr": 0.05}))
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert FILES <= {p.name for p in run_dir.iterdir()}
    recs = records(run_dir)
    assert [r["epoch"] for r in recs] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "images_per_s"):
        assert key in recs[0]
    best = max(recs, key=lambda r: r["val_acc"])  # the first epoch with the highest val accuracy
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    assert ckpt["epoch"] == best["epoch"] and ckpt["classes"] == ["cat", "dog"]
    assert "epoch 2/2 step 6/6" in proc.stdout  # plain progress lines when stdout is not a terminal
    assert sum("| train_loss" in line for line in proc.stdout.splitlines()) == 2  # one summary line per epoch
    assert "expected class mix (random sampler): cat 50.0%, dog 50.0%" in proc.stdout
    ev = run_cli("eval", "--ckpt", str(run_dir / "best.pt"))
    assert ev.returncode == 0, ev.stderr
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["val_acc"] == best["val_acc"] and result["val_loss"] == pytest.approx(best["val_loss"], abs=1e-6)
    assert "confusion matrix" in ev.stdout and "most confused pairs" in ev.stdout and "cat" in ev.stdout
    assert set(result["per_class"]) == {"cat", "dog"}
    assert sum(map(sum, result["confusion"])) == 10


def test_run_dir_is_never_silently_overwritten(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, run_dir, train={"epochs": 1}))
    assert run_cli("train", "--config", str(cfg)).returncode == 0
    before = snapshot(run_dir)
    assert_user_error(
        run_cli("train", "--config", str(cfg)), f"run_dir {run_dir} is not empty", "--resume", "--overwrite"
    )
    assert snapshot(run_dir) == before
    proc = run_cli("train", "--config", str(cfg), "--set", "train.epochs=2", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "resuming at epoch 2, batch 0" in proc.stdout
    assert [r["epoch"] for r in records(run_dir)] == [1, 2]
    proc = run_cli("train", "--config", str(cfg), "--overwrite")
    assert proc.returncode == 0 and [r["epoch"] for r in records(run_dir)] == [1]


def test_eval_with_other_data_and_out_file(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, run_dir, train={"epochs": 1}))
    assert run_cli("train", "--config", str(cfg)).returncode == 0
    out = tmp_path / "e.json"
    proc = run_cli("eval", "--ckpt", str(run_dir / "last.pt"), "--data", str(tiny_data / "train"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["samples"] == 24  # evaluated on the train folder given by --data


@pytest.mark.slow
def test_digits_demo_reaches_95_percent_in_under_two_minutes(tmp_path):
    data_dir = tmp_path / "digits"
    subprocess.run([sys.executable, "-m", "trainkit.data.digits", str(data_dir)], check=True, cwd=ROOT)
    start = time.perf_counter()
    proc = run_cli(
        "train",
        "--config",
        "configs/digits.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        f"data.train={data_dir / 'train'}",
        "--set",
        f"data.val={data_dir / 'val'}",
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    best = max(r["val_acc"] for r in records(tmp_path / "run"))
    train_time = sum(r["time"] for r in records(tmp_path / "run"))
    print(f"digits: best val_acc {best:.4f}, training {train_time:.1f}s, whole command {elapsed:.1f}s")
    assert best >= 0.95
    assert train_time < 120


def test_a_terminal_gets_a_progress_bar(tmp_path, tiny_data):
    import fcntl
    import os
    import pty
    import struct
    import termios

    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal of 160 columns
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", "--config", str(cfg)],
        cwd=ROOT,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the terminal closed: the process has ended
            break
        if not data:
            break
        chunks.append(data.decode(errors="replace"))
    out = proc.stdout.read()
    assert proc.wait() == 0
    bar = "".join(chunks)
    assert "epoch 1/2" in bar and "loss=" in bar and "img/s=" in bar and "lr=" in bar  # tqdm's bar and postfix
    assert "step 6/6" not in out  # no plain progress lines when there is a bar
    assert out.count("| train_loss") == 2  # the summary line of each epoch, always
