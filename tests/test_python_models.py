"""`model.python`: a model class of the user's (a file beside the config) or any importable factory; its args
checked against its signature; and a checkpoint's code imported only with --trust-code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, tiny_config, write_yaml

from trainkit.errors import ConfigError
from trainkit.models import build as models
from trainkit.run import config
from trainkit.store import checkpoint

MODEL = """
from pathlib import Path

from torch import nn

SENTINEL = Path(__file__).with_name("imported")
SENTINEL.write_text("this file's code ran")


class SmallNet(nn.Sequential):
    def __init__(self, width: int, num_classes: int = 10):
        super().__init__(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
"""


@pytest.fixture
def own_model(tmp_path, tiny_data):
    """A config in cfg/ whose model is cfg/mymodels.py:SmallNet, trained for one epoch."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "mymodels.py").write_text(MODEL)
    cfg = tiny_config(tiny_data, tmp_path / "run", train={"epochs": 1})
    cfg["model"] = {"python": "mymodels.py:SmallNet", "args": {"width": 6}}
    path = write_yaml(folder / "c.yaml", cfg)
    proc = run_cli("train", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    (folder / "imported").unlink()
    return folder, tmp_path / "run" / "last.pt"


def test_a_file_beside_the_config_trains_with_a_head_of_the_datas_classes(own_model):
    folder, ckpt_path = own_model
    ckpt = checkpoint.load_checkpoint(ckpt_path)
    assert ckpt["config"]["model"]["python"] == f"{folder / 'mymodels.py'}:SmallNet"  # absolute in the resolved config
    assert ckpt["model"]["4.weight"].shape == (2, 6)  # num_classes from the data's two classes
    assert len(ckpt["model_code"]["sha256"]) == 64


def test_a_checkpoints_code_is_not_imported_without_trust_code(own_model, tmp_path):
    folder, ckpt_path = own_model
    for args in (["eval", "--ckpt", str(ckpt_path)], ["predict", "--ckpt", str(ckpt_path), str(tmp_path / "data" / "val")], ["train", "--resume", str(ckpt_path), "--set", "train.epochs=2"]):  # fmt: skip
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "its model is code" in proc.stderr and "--trust-code" in proc.stderr
        assert not (folder / "imported").exists(), args  # nothing was imported
    out = tmp_path / "e.json"
    trusted = run_cli("eval", "--ckpt", str(ckpt_path), "--trust-code", "--out", str(out))
    assert trusted.returncode == 0, trusted.stderr
    assert (folder / "imported").exists() and json.loads(out.read_text())["samples"] == 10


def test_a_changed_file_is_said_in_one_line(own_model, tmp_path):
    folder, ckpt_path = own_model
    (folder / "mymodels.py").write_text(MODEL + "\n# edited after training\n")
    proc = run_cli("eval", "--ckpt", str(ckpt_path), "--trust-code", "--out", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    assert "warning: " + str(folder / "mymodels.py") + " has changed since" in proc.stderr


def test_args_are_checked_against_the_signature_before_anything_is_written(tmp_path, tiny_data):
    (tmp_path / "mymodels.py").write_text(MODEL)
    cfg = tiny_config(tiny_data, tmp_path / "run")
    cfg["model"] = {"python": "mymodels.py:SmallNet", "args": {"widht": 6}}
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 2 and "model.args.widht" in proc.stderr and "did you mean 'width'" in proc.stderr
    cfg["model"]["args"] = {}
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 2 and "missing a required argument: 'width'" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_module_factory_and_bad_references():
    model = {"python": "torchvision.models:resnet18", "args": {"num_classes": 3}}
    cfg = config.from_dict({"data": {"train": "a", "val": "b"}, "model": model})
    assert models.build_model(cfg.model, seed=0).fc.out_features == 3
    with pytest.raises(ConfigError, match="model.python: expected FILE.py:NAME or MODULE:NAME"):
        config.from_dict({"data": {"train": "a", "val": "b"}, "model": {"python": "no_colon_here"}})
    missing = config.from_dict({"data": {"train": "a", "val": "b"}, "model": {"python": "/nowhere/m.py:Net"}})
    with pytest.raises(ConfigError, match="/nowhere/m.py does not exist"):
        models.build_model(missing.model)
    absent = config.from_dict({"data": {"train": "a", "val": "b"}, "model": {"python": "torchvision.models:resnet99"}})
    with pytest.raises(ConfigError, match="has no 'resnet99'"):
        models.build_model(absent.model)


def test_paths_are_from_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write_yaml(tmp_path / "sub" / "c.yaml", {"data": {"train": "a", "val": "b"}, "model": {"python": "../m.py:Net"}})  # fmt: skip
    assert config.load_config(path).model.python == f"{Path(tmp_path / 'm.py')}:Net"


def test_export_rebuilds_it_only_with_trust_code(own_model, tmp_path):
    folder, ckpt_path = own_model
    out = tmp_path / "m.pt"
    refused = run_cli("export", "--ckpt", str(ckpt_path), "--format", "torchscript", "--out", str(out))
    assert refused.returncode == 2 and "--trust-code" in refused.stderr and not out.exists()
    assert not (folder / "imported").exists()
    exported = run_cli("export", "--ckpt", str(ckpt_path), "--format", "torchscript", "--out", str(out), "--trust-code")
    assert exported.returncode == 0, exported.stderr
    assert out.is_file() and json.loads(out.with_name("m.pt.json").read_text())["classes"] == ["cat", "dog"]
