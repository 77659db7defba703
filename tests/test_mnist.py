"""The mnist family (`data.dataset: mnist`, `fashion_mnist`, `kmnist`): IDX files the test writes in torchvision's
format (no download), read per sample and cached, trained and evaluated by the real command."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config, write_yaml

from trainkit.data import build as data
from trainkit.data.table import DATASETS
from trainkit.errors import ConfigError, DataError
from trainkit.run import config

FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


def write_idx(root: Path, kind: str, per_class: tuple[int, int] = (3, 2), seed: int = 0) -> None:
    """train and t10k IDX files (big-endian header, uint8 data) in `root/<Name>/raw`; class c is a bright
    square at its own place, so a small model can learn it."""
    raw = root / FOLDERS[kind] / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", per_class[0]), ("t10k", per_class[1])):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 40, (len(labels), 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 4)
            images[i, 2 + 6 * r : 8 + 6 * r, 2 + 6 * q : 8 + 6 * q] = 250
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, len(labels), 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())


def data_cfg(tmp_path: Path, kind: str, **extra) -> config.Config:
    cfg = {
        "data": {"dataset": kind, "root": str(tmp_path / "idx"), "num_workers": 0, **extra},
        "model": {"torchvision": "resnet18"},
    }
    return config.from_dict(cfg)


@pytest.mark.parametrize("kind", sorted(FOLDERS))
@pytest.mark.parametrize("cache", ["none", "memory"])
def test_the_family_reads_torchvision_files_per_sample_and_cached(tmp_path, kind, cache):
    write_idx(tmp_path / "idx", kind)
    cfg = data_cfg(tmp_path, kind, cache=cache, transforms={"train": ["ToTensor"]}, batch_size=8)
    d = data.build_data(cfg.data, 0, torch.device("cpu"))
    from torchvision import datasets

    assert d.classes == list(getattr(datasets, FOLDERS[kind]).classes)
    assert d.train_set is not None and len(d.train_set) == 30 and len(d.val_set) == 20
    assert d.input_shape == (1, 28, 28)  # one channel, as the files hold
    assert sorted(d.train_set.targets) == sorted(int(c) for c in np.repeat(np.arange(10), 3))
    x, y = next(iter(d.val_loader))
    assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32 and len(y) == 8


def test_missing_files_say_where_and_how(tmp_path):
    cfg = data_cfg(tmp_path, "fashion_mnist")
    with pytest.raises(
        DataError, match=r"no fashion_mnist files in .*idx/FashionMNIST/raw; put train-images-idx3-ubyte"
    ):
        data.build_data(cfg.data, 0, torch.device("cpu"))


def test_the_type_is_in_the_table_and_needs_its_root():
    assert {"mnist", "fashion_mnist", "kmnist"} <= set(DATASETS)
    with pytest.raises(ConfigError, match="data.root: required for dataset mnist"):
        config.from_dict({"data": {"dataset": "mnist"}, "model": {"torchvision": "resnet18"}})
    with pytest.raises(ConfigError, match=r"data.dataset: unknown dataset type 'minst'; did you mean 'mnist'"):
        config.from_dict({"data": {"dataset": "minst", "root": "x"}, "model": {"torchvision": "resnet18"}})


def test_train_then_eval_an_mnist_run(tmp_path):
    write_idx(tmp_path / "idx", "mnist", per_class=(6, 3))
    cfg = tiny_config(
        tmp_path,
        tmp_path / "run",
        num_classes=10,
        data={
            "dataset": "mnist",
            "root": str(tmp_path / "idx"),
            "train": None,
            "val": None,
            "batch_size": 10,
            "cache": "memory",
        },
        model={
            "sequential": [
                {"Conv2d": [1, 8, 5, 2, 2]},
                {"ReLU": {}},
                {"AdaptiveAvgPool2d": [4]},
                "Flatten",
                {"Linear": [128, 10]},
            ]
        },
        optim={"type": "SGD", "lr": 0.05, "momentum": 0.9},
        train={"epochs": 6, "log_every": 3},
    )
    trained = run_cli("train", "--config", str(write_yaml(tmp_path / "mnist.yaml", cfg)))
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("eval", "--ckpt", str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "eval.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["classes"][0] == "0 - zero" and result["samples"] == 30
    assert result["val_acc"] > 0.3  # learned something: chance is 0.1
