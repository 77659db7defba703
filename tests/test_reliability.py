"""Reliability: exact resume, signals, kill -9, NaN, AMP skips."""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_image_folder, tiny_config, write_yaml

from trainkit.errors import TrainingError
from trainkit.run import config
from trainkit.run import loop as engine
from trainkit.run.build import build_run
from trainkit.store import checkpoint

AUGMENTED = {
    "data": {
        "batch_size": 4,
        "transforms": {"train": [{"RandomCrop": {"size": 16, "padding": 2}}, "RandomHorizontalFlip", "ToTensor"]},
    },
    "model": {
        "sequential": [
            {"Conv2d": [3, 8, 3, 1, 1]},
            {"BatchNorm2d": [8]},
            "ReLU",
            {"AdaptiveAvgPool2d": [1]},
            "Flatten",
            {"Dropout": [0.3]},
            {"Linear": [8, 2]},
        ]
    },
}


def weights(run_dir: Path, which: str = "model") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)[which]


def assert_same_weights(a: Path, b: Path, which: str = "model") -> None:
    wa, wb = weights(a, which), weights(b, which)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{which} {k} differs"


def train_in_process(cfg_dict: dict, resume: str | None = None) -> None:
    run = build_run(config.from_dict(cfg_dict), resume=resume)
    engine.fit(run)


def with_sections(base: dict, **sections) -> dict:
    out = dict(base)
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize(
    "variant",
    [
        {"data": {"num_workers": 0}},
        {"data": {"num_workers": 2}},
        {"data": {"num_workers": 0, "sampler": {"type": "weighted", "class_weights": "balanced"}}},
        {"scheduler": {"type": "StepLR", "step_size": 1, "gamma": 0.7}},
        {"scheduler": {"type": "OneCycleLR", "max_lr": 0.2, "total_steps": 40}, "data": {"num_workers": 2}},
        {"data": {"cache": "memory", "sampler": {"type": "weighted", "class_weights": "balanced"}}},
        {"data": {"num_workers": 0}, "train": {"ema": {"decay": 0.9, "every": 3}}},
    ],
    ids=["workers0", "workers2", "weighted", "steplr", "onecycle-per-step", "cache", "ema"],
)
def test_half_then_resume_is_bitwise_identical_to_straight(tmp_path, variant):
    data_root = tmp_path / "data"
    make_image_folder(data_root / "train", {"cat": 14, "dog": 6}, seed=3)
    make_image_folder(data_root / "val", {"cat": 3, "dog": 3}, seed=4)
    base = tiny_config(data_root, tmp_path / "straight", **AUGMENTED)
    for key, value in variant.items():
        base[key] = {**base.get(key, {}), **value} if key in base else value
    base["data"] = {**base["data"], **AUGMENTED["data"], **variant.get("data", {})}
    train = {**variant.get("train", {}), "log_every": 2}
    straight = with_sections(base, train={**train, "epochs": 4})
    train_in_process(straight)
    halves = with_sections(base, run_dir=str(tmp_path / "halves"), train={**train, "epochs": 2})
    train_in_process(halves)
    halves["train"]["epochs"] = 4
    train_in_process(halves, resume=str(tmp_path / "halves" / "last.pt"))
    assert torch.load(tmp_path / "halves" / "last.pt", weights_only=True)["epoch"] == 4
    assert_same_weights(tmp_path / "straight", tmp_path / "halves")
    if "ema" in train:  # the average is resumed too, not restarted from the weights
        assert_same_weights(tmp_path / "straight", tmp_path / "halves", "ema")


def slow_config(tmp_path: Path, run_dir: Path, epochs: int = 3, **extra) -> Path:
    """Bigger images and a wider model, so a step takes long enough to signal mid-epoch."""
    data_root = tmp_path / "data"
    if not data_root.exists():
        make_image_folder(data_root / "train", {"cat": 24, "dog": 24}, size=48, seed=5)
        make_image_folder(data_root / "val", {"cat": 4, "dog": 4}, size=48, seed=6)
    cfg = tiny_config(
        data_root,
        run_dir,
        data={
            "batch_size": 4,
            "num_workers": 2,
            "transforms": {"train": [{"RandomCrop": {"size": 48, "padding": 4}}, "ToTensor"]},
        },
        model={
            "sequential": [
                {"Conv2d": [3, 64, 3, 1, 1]},
                "ReLU",
                {"Conv2d": [64, 64, 3, 1, 1]},
                "ReLU",
                {"AdaptiveAvgPool2d": [1]},
                "Flatten",
                {"Dropout": [0.2]},
                {"Linear": [64, 2]},
            ]
        },
        train={"epochs": epochs, "log_every": 1, **extra},
    )
    return write_yaml(tmp_path / f"{run_dir.name}.yaml", cfg)


def start_training(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(proc: subprocess.Popen, fragment: str, timeout: float = 120) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if fragment in line:
            return seen
    raise AssertionError(f"never saw {fragment!r}; output: {''.join(seen)[-2000:]}")


@pytest.mark.slow
def test_sigint_mid_epoch_saves_and_resume_matches_straight(tmp_path):
    straight = start_training("--config", str(slow_config(tmp_path, tmp_path / "straight")))
    out, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err

    cfg = slow_config(tmp_path, tmp_path / "stopped")
    proc = start_training("--config", str(cfg))
    wait_for_line(proc, "epoch 2/3 step 3/12")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"resume with: trainkit train --resume {tmp_path / 'stopped' / 'last.pt'}" in out
    ckpt = checkpoint.load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert ckpt["epoch"] == 1 and 3 <= ckpt["batch"] < 12  # stopped mid-epoch 2, at the step after the signal

    resumed = start_training("--resume", str(tmp_path / "stopped" / "last.pt"))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"resuming at epoch 2, batch {ckpt['batch']}" in out
    assert_same_weights(tmp_path / "straight", tmp_path / "stopped")
    lines = (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


@pytest.mark.slow
def test_sigterm_exits_143_with_a_loadable_checkpoint_and_a_second_sigint_aborts(tmp_path):
    proc = start_training("--config", str(slow_config(tmp_path, tmp_path / "term")))
    wait_for_line(proc, "epoch 1/3 step 2/12")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in out
    assert checkpoint.load_checkpoint(tmp_path / "term" / "last.pt")["batch"] >= 2

    proc = start_training("--config", str(slow_config(tmp_path, tmp_path / "twice")))
    wait_for_line(proc, "epoch 1/3 step 2/12")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    if (tmp_path / "twice" / "last.pt").exists():
        checkpoint.load_checkpoint(tmp_path / "twice" / "last.pt")
    assert not glob.glob(str(tmp_path / "twice" / ".*.tmp-*"))


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_the_checkpoint(tmp_path):
    data_root = tmp_path / "data"
    make_image_folder(data_root / "train", {"cat": 8, "dog": 8}, seed=7)
    make_image_folder(data_root / "val", {"cat": 2, "dog": 2}, seed=8)
    big = {"sequential": ["Flatten", {"Linear": [768, 4096]}, "ReLU", {"Linear": [4096, 2]}]}  # ~25 MB per save
    run_dir = tmp_path / "run"
    cfg = write_yaml(
        tmp_path / "c.yaml", tiny_config(data_root, run_dir, model=big, train={"epochs": 1000, "log_every": 4})
    )
    rng = random.Random(0)
    during_write = 0
    for i in range(12):
        resume = ["--resume"] if (run_dir / "last.pt").exists() else ["--overwrite"]
        proc = start_training("--config", str(cfg), *resume)
        if i == 0:  # a first checkpoint, however slow the start under load: every later kill meets a run
            deadline = time.monotonic() + 120
            while not (run_dir / "last.pt").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 2.0))
        elif i % 2:  # the moment a checkpoint write starts
            deadline = time.monotonic() + 120
            while not glob.glob(str(run_dir / ".last.pt.tmp-*")) and time.monotonic() < deadline:
                time.sleep(0.001)
        else:  # anywhere
            time.sleep(rng.uniform(3.0, 6.0))
        proc.kill()
        proc.wait()
        if glob.glob(str(run_dir / ".last.pt.tmp-*")):
            during_write += 1
        if (run_dir / "last.pt").exists():
            checkpoint.load_checkpoint(run_dir / "last.pt")  # always whole and loadable
    assert during_write >= 3, "too few kills landed inside a checkpoint write"
    epoch = checkpoint.load_checkpoint(run_dir / "last.pt")["epoch"]
    proc = start_training("--config", str(cfg), "--resume", "--set", f"train.epochs={epoch + 1}")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert checkpoint.load_checkpoint(run_dir / "last.pt")["epoch"] == epoch + 1
    assert not glob.glob(str(run_dir / ".*.tmp-*")), "temporary files left after a successful save"


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path / "run", train={"epochs": 1, "log_every": 2})
    train_in_process(cfg)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    cfg["train"]["epochs"] = 3
    run = build_run(config.from_dict(cfg), resume=str(tmp_path / "run" / "last.pt"))
    with torch.no_grad():
        run.model[-1].weight.fill_(float("nan"))  # a diverged model, for real
    with pytest.raises(
        TrainingError, match=r"loss became nan in epoch 2 by step 2; the last good checkpoint .*epoch 1\) is kept"
    ):
        engine.fit(run)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_on_nan_skip_counts_the_skipped_steps(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path / "run", train={"epochs": 1, "log_every": 2, "on_nan": "skip"})
    run = build_run(config.from_dict(cfg))
    with torch.no_grad():
        run.model[-1].bias.fill_(float("inf"))
    record = engine.fit(run)
    assert record["nan_skipped_steps"] == 6  # every step of the epoch


def test_fp16_gradscaler_skips_are_counted(tmp_path, tiny_data):
    cfg = tiny_config(
        tiny_data, tmp_path / "run", train={"epochs": 1, "log_every": 2, "amp": "fp16", "fp16_init_scale": 2.0**40}
    )
    record = engine.fit(build_run(config.from_dict(cfg)))
    assert record["amp_skipped_steps"] == 6  # the scaled gradients overflow fp16 and GradScaler skips


@pytest.mark.slow
def test_kill_9_mid_epoch_loses_at_most_checkpoint_every_and_resumes_exactly(tmp_path):
    every = {"checkpoint_every": {"steps": 3, "minutes": None}}
    cfg = slow_config(tmp_path, tmp_path / "killed", epochs=1, **every)  # 12 steps in the epoch
    proc = start_training("--config", str(cfg))
    wait_for_line(proc, "step 8/12")
    proc.kill()
    proc.wait()
    ckpt = checkpoint.load_checkpoint(tmp_path / "killed" / "last.pt")
    # written at step 6, mid-epoch (or at step 9, when the kill came late under load): at most 3 steps lost
    at = ckpt["batch"]
    assert ckpt["epoch"] == 0 and at in (6, 9) and ckpt["step"] == at, (ckpt["epoch"], at)
    proc = start_training("--config", str(cfg), "--resume")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"resuming at epoch 1, batch {at} (step {at})" in out
    straight = slow_config(tmp_path, tmp_path / "straight", epochs=1, checkpoint_every=None)
    proc = start_training("--config", str(straight))
    assert proc.communicate(timeout=300) and proc.returncode == 0
    assert_same_weights(tmp_path / "straight", tmp_path / "killed")


def test_checkpoint_every_minutes_is_the_default_and_is_checked(tmp_path, tiny_data):
    assert config.from_dict(tiny_config(tiny_data, tmp_path)).train.checkpoint_every.minutes == 10
    for bad in ({"steps": 0}, {"minutes": -1}):
        with pytest.raises(Exception, match="train.checkpoint_every"):
            config.from_dict(tiny_config(tiny_data, tmp_path, train={"checkpoint_every": bad}))


def test_save_top_k_keeps_the_k_best_named_by_epoch_and_metric_across_a_resume(tmp_path, tiny_data):
    import json

    train = {"save_top_k": 2, "monitor": "val_loss", "monitor_mode": "min", "log_every": 2}
    straight = tiny_config(tiny_data, tmp_path / "straight", train={**train, "epochs": 5})
    train_in_process(straight)
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    best = sorted(records, key=lambda r: (r["val_loss"], -r["epoch"]))[:2]
    expected = {f"epoch={r['epoch']:03d}-val_loss={r['val_loss']:.4f}.pt" for r in best}
    assert {p.name for p in (tmp_path / "straight").glob("epoch=*.pt")} == expected
    for name in expected:  # each is the checkpoint of its epoch
        ckpt = checkpoint.load_checkpoint(tmp_path / "straight" / name)
        assert ckpt["epoch"] == int(name[6:9])
    assert checkpoint.load_checkpoint(tmp_path / "straight" / "best.pt")["epoch"] == best[0]["epoch"]
    halves = tiny_config(tiny_data, tmp_path / "halves", train={**train, "epochs": 3})
    train_in_process(halves)
    halves["train"]["epochs"] = 5
    train_in_process(halves, resume=str(tmp_path / "halves" / "last.pt"))
    assert {p.name for p in (tmp_path / "halves").glob("epoch=*.pt")} == expected
    # 0: no best checkpoint at all; --overwrite removes the named ones too
    none = tiny_config(tiny_data, tmp_path / "halves", train={**train, "save_top_k": 0, "epochs": 1})
    run = build_run(config.from_dict(none), overwrite=True)
    engine.fit(run)
    assert sorted(p.name for p in (tmp_path / "halves").glob("*.pt")) == ["last.pt"]


def test_nan_before_any_checkpoint_says_none_was_saved(tmp_path, tiny_data):
    run = build_run(config.from_dict(tiny_config(tiny_data, tmp_path / "run")))
    with torch.no_grad():
        run.model[-1].weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="no checkpoint was saved yet") as caught:
        engine.fit(run)
    assert "last.pt" not in str(caught.value)  # it named runs/x/last.pt, which did not exist
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("share", [1.0, 0.6], ids=["all-gone", "most-gone"])
def test_an_epoch_of_mostly_bad_images_is_an_error_and_keeps_the_checkpoint(tmp_path, tiny_data, share):
    from trainkit.errors import DataError

    raw = tiny_config(tiny_data, tmp_path / "run", data={"on_bad_image": "skip"}, train={"epochs": 1})
    train_in_process(raw)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    raw["train"]["epochs"] = 3
    run = build_run(config.from_dict(raw), resume=str(tmp_path / "run" / "last.pt"))
    files = sorted((tiny_data / "train").glob("*/*.png"))
    for f in files[: int(len(files) * share)]:  # the data goes away mid-run
        f.unlink()
    with pytest.raises(DataError, match=r"epoch 2: .* could not be decoded \(more than data.max_bad_fraction 0.5\)"):
        engine.fit(run)  # (it ran epochs on 0 images, `skipped 24 bad images`, and ended with rc 0)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
