"""`trainkit lr-find`: the learning-rate range test through the real CLI."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_user_error, run_cli, tiny_config, write_yaml


def epochs(run_dir: Path) -> list[tuple[float, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["train_loss"], r["val_loss"]) for r in map(json.loads, lines)]


def test_lr_find_suggests_and_changes_nothing(tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run", train={"epochs": 2}))
    before = run_cli("train", "--config", str(cfg), "--run-dir", str(tmp_path / "before"))
    assert before.returncode == 0, before.stderr
    out = tmp_path / "lr"
    proc = run_cli(
        "lr-find", "--config", str(cfg), "--steps", "30", "--start", "1e-5", "--end", "10", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "lr_find.csv")))
    lrs = [float(r["lr"]) for r in rows]
    assert 5 <= len(rows) <= 30 and lrs[0] == pytest.approx(1e-5) and lrs == sorted(lrs)
    assert lrs[1] / lrs[0] == pytest.approx((10 / 1e-5) ** (1 / 29))  # exponential steps
    assert (out / "lr_find.png").stat().st_size > 5_000
    suggested = float(re.search(r"suggested learning rate: (\S+)", proc.stdout).group(1))
    assert lrs[0] <= suggested <= lrs[-1]
    assert f"--set optim.lr={suggested:.3g}" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.csv", "lr_find.png"]
    assert not (tmp_path / "run").exists()  # the config's run directory is not touched
    after = run_cli("train", "--config", str(cfg), "--run-dir", str(tmp_path / "after"))
    assert after.returncode == 0, after.stderr
    assert epochs(tmp_path / "after") == epochs(tmp_path / "before")  # the same weights and data order

    assert_user_error(run_cli("lr-find", "--config", str(cfg), "--start", "0"), "--start 0")
    assert_user_error(run_cli("lr-find", "--config", str(cfg), "--steps", "2"), "--steps 2")


@pytest.mark.slow
def test_on_the_digits_the_suggestion_trains_well(tmp_path):
    data = tmp_path / "digits"
    import subprocess

    subprocess.run([sys.executable, "-m", "trainkit.data.digits", str(data)], check=True, capture_output=True)
    sets = [f"data.train={data / 'train'}", f"data.val={data / 'val'}", f"run_dir={tmp_path / 'run'}"]
    args = ["--config", str(ROOT / "configs" / "digits.yaml"), *[a for s in sets for a in ("--set", s)]]
    proc = run_cli("lr-find", *args, "--out", str(tmp_path / "lr"))
    assert proc.returncode == 0, proc.stderr
    lr = float(re.search(r"suggested learning rate: (\S+)", proc.stdout).group(1))
    print(f"digits: lr-find suggests {lr}")
    assert 1e-3 <= lr <= 1
    train = run_cli("train", *args, "--set", f"optim.lr={lr}")
    assert train.returncode == 0, train.stderr
    best = max(json.loads(line)["val_acc"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    print(f"digits: trained with it, best val accuracy {best:.4f}")
    assert best >= 0.95


def test_a_flat_curve_suggests_nothing_and_one_cycle_gets_its_own_key(tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run"))
    out = tmp_path / "flat"
    # rates this small move nothing: the curve is noise (it suggested 1.75e-07 from a dip at the start)
    proc = run_cli(
        "lr-find", "--config", str(cfg), "--steps", "40", "--start", "1e-9", "--end", "1e-8", "--out", str(out)
    )
    assert proc.returncode == 1, proc.stderr
    assert "no learning rate stands out" in proc.stdout and str(out / "lr_find.png") in proc.stdout
    assert "suggested learning rate" not in proc.stdout
    one_cycle = tiny_config(tiny_data, tmp_path / "run", scheduler={"type": "OneCycleLR", "max_lr": 0.2})
    proc = run_cli(
        "lr-find", "--config", str(write_yaml(tmp_path / "o.yaml", one_cycle)), "--steps", "30",
        "--start", "1e-5", "--end", "10", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--set scheduler.max_lr=" in proc.stdout and "--set optim.lr=" not in proc.stdout
