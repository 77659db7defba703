"""`trainkit runs` and `trainkit compare` through the real CLI, on real runs: finished, stopped by a real signal,
stopped early, stopped by a NaN, running in a live process, and killed with SIGKILL."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, assert_user_error, run_cli, tiny_config, write_yaml

from trainkit.store.status import lock_holder, read_status
from trainkit.study.compare import curve, read_runs


def train(cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run_cli("train", "--config", str(cfg), *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def rows_json(*dirs: Path, sort: str | None = None) -> list[dict]:
    proc = run_cli("runs", *map(str, dirs), "--format", "json", *([f"--sort={sort}"] if sort else []))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainkit", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def wait_line(proc: subprocess.Popen, fragment: str) -> None:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if fragment in line:
            return
    raise AssertionError(f"never saw {fragment!r}: {''.join(seen)[-1500:]} {proc.stderr.read()[-1500:]}")


def test_runs_says_how_each_run_ended_and_only_the_keys_that_differ(tmp_path, tiny_data):
    runs = tmp_path / "runs"
    a = write_yaml(tmp_path / "a.yaml", tiny_config(tiny_data, runs / "lr-0.1"))
    b = write_yaml(
        tmp_path / "b.yaml",
        tiny_config(tiny_data, runs / "lr-0.01", optim={"type": "SGD", "lr": 0.01, "momentum": 0.9}),
    )
    never = {"monitor": "val_loss", "mode": "min", "patience": 1, "min_delta": 1.0e6}  # no epoch improves enough
    early = tiny_config(tiny_data, runs / "early", train={"epochs": 6, "early_stopping": never})
    train(a)
    train(b)
    train(write_yaml(tmp_path / "early.yaml", early))
    # a NaN after the first step's checkpoint: a learning rate that makes the loss overflow
    blows = tiny_config(tiny_data, runs / "nan", optim={"type": "SGD", "lr": 1.0e30},
                        train={"epochs": 2, "log_every": 1, "checkpoint_every": {"steps": 1}})  # fmt: skip
    nan = run_cli("train", "--config", str(write_yaml(tmp_path / "nan.yaml", blows)))
    assert nan.returncode == 1 and "loss became" in nan.stderr, nan.stderr
    by = {r["run"]: r for r in rows_json(runs)}
    assert by["lr-0.1"]["state"] == "finished" and by["lr-0.1"]["epoch"] == 2 and by["lr-0.1"]["epochs"] == 2
    assert by["early"]["status"] == "stopped at epoch 2 (early stopping)"
    assert by["nan"]["status"] == "stopped at epoch 0 (NaN)", by["nan"]
    assert by["lr-0.1"]["best_epoch"] in (1, 2) and 0 <= by["lr-0.1"]["best"] <= 1
    assert by["lr-0.1"]["val_acc"] is not None and by["lr-0.1"]["val_loss"] is not None
    assert by["lr-0.1"]["wall_s"] > 0 and by["lr-0.1"]["started"].startswith("20")
    # only what differs: optim.lr, the epochs and early stopping; not optim.type, not the data
    keys = set(by["lr-0.1"]["config"])
    assert {"optim.lr", "train.epochs"} <= keys and not {"optim.type", "data.train", "run_dir", "name"} & keys
    assert by["lr-0.01"]["config"]["optim.lr"] == 0.01
    # runs reads status.json's copy of the config (JSON), which is config.yaml's content...
    assert read_status(runs / "lr-0.01")["config"] == yaml.safe_load((runs / "lr-0.01" / "config.yaml").read_text())
    # ...and config.yaml where status.json has none (a run of an older trainkit)
    held = read_status(runs / "lr-0.01")
    (runs / "lr-0.01" / "status.json").write_text(json.dumps({k: v for k, v in held.items() if k != "config"}))
    assert {r["run"]: r for r in rows_json(runs)}["lr-0.01"]["config"] == by["lr-0.01"]["config"]

    table = run_cli("runs", str(runs))
    assert table.returncode == 0, table.stderr
    head, *lines = table.stdout.splitlines()
    assert head.split()[:4] == ["run", "status", "epochs", "best"] and "optim.lr" in head
    assert lines[0].startswith("nan")  # newest first
    ordered = [r["run"] for r in rows_json(runs, sort="optim.lr")]
    assert ordered.index("lr-0.01") < ordered.index("lr-0.1")
    assert [r["run"] for r in rows_json(runs, sort="-started")][0] == "nan"
    csv_out = run_cli("runs", str(runs), "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert {r["run"] for r in parsed} == set(by)
    assert float(next(r for r in parsed if r["run"] == "lr-0.1")["best"]) == by["lr-0.1"]["best"]


@pytest.mark.slow
def test_a_live_run_is_running_a_killed_one_is_not_and_sigint_is_said(tmp_path, tiny_data):
    runs = tmp_path / "runs"
    long = write_yaml(tmp_path / "long.yaml", tiny_config(tiny_data, runs / "live", train={"epochs": 500}))
    proc = start("train", "--config", str(long))
    try:
        wait_line(proc, "epoch 2/500 |")
        assert lock_holder(runs / "live") == proc.pid
        (row,) = rows_json(runs)
        assert row["state"] == "running" and f"pid {proc.pid}" in row["status"]
        proc.send_signal(signal.SIGKILL)  # no handler runs: status.json still says running
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert read_status(runs / "live")["state"] == "running"
    assert lock_holder(runs / "live") is None  # the kernel dropped the dead process's lock
    (row,) = rows_json(runs)
    assert row["state"] == "failed" and "its process died" in row["status"], row

    proc = start("train", "--resume", str(runs / "live" / "last.pt"))
    wait_line(proc, "| train_loss")  # an epoch of the resumed run
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    (row,) = rows_json(runs)
    assert row["state"] == "stopped" and row["status"].endswith("(SIGINT)"), row
    assert row["epoch"] >= 3 and read_status(runs / "live")["wall_s"] > 0


def test_runs_bad_input_is_one_line(tmp_path, tiny_cfg_path):
    assert_user_error(run_cli("runs", str(tmp_path / "nowhere")), "no such folder")
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli("runs", str(tmp_path / "empty")), "no run directories")
    train(tiny_cfg_path)
    assert_user_error(run_cli("runs", str(tmp_path), "--sort", "val_accc"), "did you mean 'val_acc'")


def test_runs_imports_no_torch(tmp_path, tiny_cfg_path):
    train(tiny_cfg_path)
    code = (
        "import sys; from trainkit.cli import main; code = main(['runs', sys.argv[1]]); "
        "heavy = sorted(m for m in ('torch', 'torchvision', 'optuna', 'mlflow', 'matplotlib') if m in sys.modules); "
        "print('heavy', heavy); sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "heavy []" in proc.stdout


@pytest.mark.slow
def test_compare_draws_runs_of_different_lengths_and_a_resumed_one(tmp_path, tiny_data):
    runs = tmp_path / "runs"
    short = write_yaml(tmp_path / "s.yaml", tiny_config(tiny_data, runs / "short"))
    long = write_yaml(tmp_path / "l.yaml", tiny_config(tiny_data, runs / "long", optim={"type": "SGD", "lr": 0.05}))
    train(short)
    train(long)
    train(long, "--resume", "--set", "train.epochs=4")  # resumed: epochs 3 and 4 after 1 and 2
    proc = run_cli("compare", str(runs / "short"), str(runs / "long" / "best.pt"), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "config differences:" in out and "optim.lr" in out and "train.epochs" in out
    assert "metrics at the best epoch" in out and "metrics at the last epoch" in out
    last = out.split("metrics at the last epoch")[1]
    assert [ln.split() for ln in last.splitlines() if ln.startswith("epoch")][0] == ["epoch", "2", "4"]
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    for name in ("loss.png", "accuracy.png", "lr.png"):
        assert (tmp_path / "cmp" / "compare" / name).stat().st_size > 1000
    rows = read_runs([str(runs / "short"), str(runs / "long")])
    assert [e for e, _ in curve(rows[1], "val_loss")] == [1, 2, 3, 4]  # each epoch once, in order
    assert [e for e, _ in curve(rows[0], "lr")] == [1, 2]
    assert_user_error(run_cli("compare", str(runs / "short"), str(tmp_path)), "not a run directory")


def test_a_run_of_an_older_trainkit_without_status_json_still_lists(tmp_path, tiny_cfg_path):
    train(tiny_cfg_path)
    (tmp_path / "run" / "status.json").unlink()
    (row,) = rows_json(tmp_path)
    assert row["state"] == "finished" and row["wall_s"] > 0
