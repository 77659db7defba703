"""log.tensorboard: a real run through the CLI, its event file read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config, write_yaml

from trainkit.sinks.tensorboard import confusion_image, confusion_table

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(folder) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_a_run_writes_scalars_images_and_the_config(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path / "run", log={"visdom": {"enabled": False}, "tensorboard": {"enabled": True}})
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "tb.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    acc = read_events(tmp_path / "run" / "tb")  # log.tensorboard.dir defaults to <run_dir>/tb
    tags = acc.Tags()
    epoch_tags = {f"epoch/{k}" for k in ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "images_per_s")}
    step_tags = {f"step/{k}" for k in ("loss", "acc", "lr", "images_per_s")}
    assert set(tags["scalars"]) == epoch_tags | step_tags
    for tag in epoch_tags:  # 2 epochs
        assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
    # 24 images in batches of 4: 6 steps an epoch, logged every 2 steps, on one global step axis
    assert [e.step for e in acc.Scalars("step/loss")] == [2, 4, 6, 8, 10, 12]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("epoch/val_acc")] == pytest.approx([r["val_acc"] for r in records])
    assert set(tags["images"]) == {"samples", "confusion"}
    assert len(acc.Images("samples")) == 1 and len(acc.Images("confusion")) == 2
    texts = {t: acc.Tensors(t) for t in tags["tensors"]}
    config_text = texts["config/text_summary"][0].tensor_proto.string_val[0].decode()
    assert "name: tiny" in config_text and "tensorboard:" in config_text
    table = texts["confusion/text_summary"][-1].tensor_proto.string_val[0].decode()
    assert "| cat |" in table and "| dog |" in table


def test_resume_appends_to_the_same_folder(tmp_path, tiny_data):
    tb = tmp_path / "board"
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        log={"visdom": {"enabled": False}, "tensorboard": {"enabled": True, "dir": str(tb)}},
    )
    path = write_yaml(tmp_path / "tb.yaml", cfg)
    assert run_cli("train", "--config", str(path)).returncode == 0
    proc = run_cli("train", "--config", str(path), "--resume", "--set", "train.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "run" / "tb").exists()
    assert [e.step for e in read_events(tb).Scalars("epoch/train_loss")] == [1, 2, 3]


def test_confusion_image_and_table():
    m = np.array([[3, 1], [0, 0]])
    img = confusion_image(m)
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert torch.allclose(img[:, 0, 0], torch.tensor([0.2875, 0.4, 0.6625]))  # 3/4 of the way to dark blue
    assert torch.allclose(img[:, 0, 16], torch.tensor([0.7625, 0.8, 0.8875]))  # 1/4
    assert torch.all(img[:, 16:, :] == 1.0)  # a class with no images: white, not NaN
    assert confusion_table(m, ["a", "b"]).splitlines()[2] == "| a | 3 | 1 |"
