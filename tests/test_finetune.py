"""`train.finetune`: the head alone for `frozen_epochs` (the backbone's weights and BatchNorm statistics kept), then
everything, the backbone at the scaled rate; the switch said and recorded; a resume across it exact."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, tiny_config, write_yaml

from trainkit.errors import ConfigError
from trainkit.models import build as models
from trainkit.run import config
from trainkit.store import checkpoint

MODEL = {
    "sequential": [
        {"Conv2d": [3, 4, 3, 1, 1]},
        {"BatchNorm2d": [4]},
        {"ReLU": {}},
        {"AdaptiveAvgPool2d": [1]},
        "Flatten",
        {"Linear": [4, 2]},
    ]
}


def finetune_config(tiny_data, run_dir, epochs: int = 3) -> dict:
    cfg = tiny_config(tiny_data, run_dir, train={"epochs": epochs, "save_top_k": -1, "finetune": {"frozen_epochs": 1, "unfrozen_lr_scale": 0.1}})  # fmt: skip
    cfg["model"] = MODEL
    return cfg


def test_the_head_trains_alone_then_everything_at_the_scaled_rate(tmp_path, tiny_data):
    raw = finetune_config(tiny_data, tmp_path / "run")
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", raw)))
    assert proc.returncode == 0, proc.stderr
    assert "fine-tune: epoch 2: the backbone trains too, at optim.lr x 0.1 (the head alone for 1 epoch before)" in proc.stdout  # fmt: skip
    start = models.build_model(config.from_dict(raw).model, seed=0).state_dict()
    first, second = (
        checkpoint.load_checkpoint(next((tmp_path / "run").glob(f"epoch={e:03d}-*.pt")))["model"] for e in (1, 2)
    )
    for key in ("0.weight", "1.weight", "1.running_mean", "1.running_var"):  # the backbone, its statistics too
        assert torch.equal(first[key], start[key]), key
        assert not torch.equal(second[key], first[key]), key
    assert not torch.equal(first["5.weight"], start["5.weight"])  # the head trained from the first epoch
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["backbone_frozen"] for r in records] == [True, False, False]
    groups = checkpoint.load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]
    assert sorted(round(g["lr"] / 0.1, 6) for g in groups) == [0.1, 1.0]  # the backbone at lr x 0.1


def test_a_resume_across_the_switch_is_exact(tmp_path, tiny_data):
    straight = write_yaml(tmp_path / "a.yaml", finetune_config(tiny_data, tmp_path / "straight"))
    assert run_cli("train", "--config", str(straight)).returncode == 0
    halves = write_yaml(tmp_path / "b.yaml", finetune_config(tiny_data, tmp_path / "halves"))
    assert run_cli("train", "--config", str(halves), "--set", "train.epochs=1").returncode == 0
    again = run_cli("train", "--config", str(halves), "--resume")
    assert again.returncode == 0, again.stderr
    assert "fine-tune: epoch 2" in again.stdout
    a = checkpoint.load_checkpoint(tmp_path / "straight" / "last.pt")
    b = checkpoint.load_checkpoint(tmp_path / "halves" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_its_keys_are_checked():
    base = {"data": {"train": "a", "val": "b"}, "model": MODEL}
    with pytest.raises(ConfigError, match="train.finetune.frozen_epochs: must be a positive number of epochs, got 0"):
        config.from_dict({**base, "train": {"finetune": {"frozen_epochs": 0}}})
    with pytest.raises(ConfigError, match="train.finetune.unfrozen_lr_scale: must be a positive number"):
        config.from_dict({**base, "train": {"finetune": {"unfrozen_lr_scale": -1}}})
