"""`model.pretrained` for torchvision: weights by name through torchvision's weights API, the file where torch keeps
it (this machine has no network: a file the test lays in a temporary TORCH_HOME stands for a downloaded one), the
head of the data's classes, the preprocessing of the weights, and the one line when the file cannot be had."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from conftest import run_cli, tiny_config, write_yaml

from trainkit.errors import ConfigError
from trainkit.models import build as models
from trainkit.run import config
from trainkit.store import checkpoint

RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name of ResNet18_Weights.IMAGENET1K_V1's URL


def model_cfg(**model) -> config.Config:
    return config.from_dict({"data": {"train": "a", "val": "b"}, "model": {"torchvision": "resnet18", **model}})


def lay_weights(torch_home, seed: int = 3) -> dict[str, torch.Tensor]:
    """A resnet18 state_dict (1000 classes) where torch hub would have put the download."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18().state_dict()
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / RESNET18_FILE)
    return state


def test_names_resolve_through_torchvision_and_a_wrong_one_lists_the_models_weights():
    for name in ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", True):
        assert model_cfg(pretrained=name).model.pretrained_weights.name == "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(ConfigError, match=r"model.pretrained: resnet18 has no weights 'IMAGENET1K_V2'; did you mean 'IMAGENET1K_V1'\?; its weights are IMAGENET1K_V1, DEFAULT"):  # fmt: skip
        model_cfg(pretrained="IMAGENET1K_V2")
    with pytest.raises(ConfigError, match="model.pretrained: model.sequential has no named weights"):
        config.from_dict(
            {"data": {"train": "a", "val": "b"}, "model": {"sequential": ["Flatten"], "pretrained": "DEFAULT"}}
        )
    with pytest.raises(ConfigError, match="give model.pretrained or model.weights, not both"):
        model_cfg(pretrained="DEFAULT", weights="w.pt")
    with pytest.raises(ConfigError, match="never downloads weights through args; name them as model.pretrained"):
        model_cfg(args={"weights": "DEFAULT"})


def test_the_preprocessing_defaults_to_the_weights_own_and_print_config_shows_it(tmp_path):
    cfg = model_cfg(pretrained="DEFAULT")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert cfg.data.transforms.val == [{"Resize": {"size": 256}}, {"CenterCrop": 224}, "ToTensor", {"Normalize": {"mean": mean, "std": std}}]  # fmt: skip
    assert cfg.data.transforms.train[0] == {"RandomResizedCrop": {"size": 224}}
    own = config.from_dict({"data": {"train": "a", "val": "b", "transforms": {"train": ["ToTensor"]}}, "model": {"torchvision": "resnet18", "pretrained": "DEFAULT"}})  # fmt: skip
    assert own.data.transforms.train == ["ToTensor"] and own.data.transforms.val is None  # a config's own stay
    path = write_yaml(tmp_path / "c.yaml", {"data": {"train": "a", "val": "b"}, "model": {"torchvision": "resnet18", "pretrained": "DEFAULT"}})  # fmt: skip
    shown = run_cli("train", "--config", str(path), "--print-config")
    assert shown.returncode == 0 and "CenterCrop: 224" in shown.stdout and "pretrained: DEFAULT" in shown.stdout


def test_a_cached_file_loads_with_a_new_head_of_the_datas_classes(tmp_path, monkeypatch):
    state = lay_weights(tmp_path / "torch")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    notes: list[str] = []
    model = models.build_model(model_cfg(pretrained="DEFAULT").model, 0, notes, checkpoint.load_weights, num_classes=5)
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert model.fc.out_features == 5
    assert notes == ["model.pretrained ResNet18_Weights.IMAGENET1K_V1: fc.weight, fc.bias not loaded (the head has 5 classes, the weights 1000)"]  # fmt: skip


@pytest.mark.slow
def test_train_from_cached_weights_then_eval_without_them(tmp_path, tiny_data):
    lay_weights(tmp_path / "torch")
    env = {"TORCH_HOME": str(tmp_path / "torch")}
    cfg = tiny_config(tiny_data, tmp_path / "run", train={"epochs": 1})
    cfg["model"] = {"torchvision": "resnet18", "pretrained": "DEFAULT"}
    cfg["data"]["transforms"] = {"train": ["ToTensor", {"Normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}]}
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "fc.weight, fc.bias not loaded (the head has 2 classes, the weights 1000)" in proc.stdout
    assert "warning: data.transforms: Normalize mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5] differs from what ResNet18_Weights.IMAGENET1K_V1 was trained with" in proc.stdout  # fmt: skip
    ckpt = checkpoint.load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["pretrained"]["name"] == "ResNet18_Weights.IMAGENET1K_V1" and ckpt["pretrained"]["params"] == 11689512
    assert ckpt["pretrained"]["top1"] == pytest.approx(69.758)
    (tmp_path / "torch" / "hub" / "checkpoints" / RESNET18_FILE).unlink()  # eval reads the checkpoint's weights only
    out = tmp_path / "eval.json"
    evaluated = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--out", str(out), env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(out.read_text())["samples"] == 10


def test_not_cached_and_offline_is_one_line_before_anything_is_written(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path / "run")
    cfg["model"] = {"torchvision": "resnet18", "pretrained": "DEFAULT"}
    proc = run_cli(
        "train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), env={"TORCH_HOME": str(tmp_path / "t")}
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    path = tmp_path / "t" / "hub" / "checkpoints" / RESNET18_FILE
    assert len(lines) == 1 and lines[0].startswith("trainkit: error: model.pretrained ResNet18_Weights.IMAGENET1K_V1:")
    assert f"curl -L https://download.pytorch.org/models/{RESNET18_FILE} -o {path}" in lines[0]
    assert not (tmp_path / "run").exists() and not path.exists()


@pytest.mark.slow
def test_the_models_table_shows_weights_top1_and_the_cache(tmp_path):
    lay_weights(tmp_path / "torch")
    env = {"TORCH_HOME": str(tmp_path / "torch")}
    proc = run_cli("models", "resnet*", "--pretrained", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["model", "params", "weights", "top-1", "input", "cached"]
    assert lines[1:].count(next(ln for ln in lines if ln.startswith("resnet18 "))) == 1
    assert next(ln for ln in lines if ln.startswith("resnet18 ")).split() == ["resnet18", "11.7M", "IMAGENET1K_V1", "69.8%", "224", "yes"]  # fmt: skip
    assert next(ln for ln in lines if ln.startswith("resnet50 ")).split()[-1] == "no"
    none = run_cli("models", "no_such_net*", env=env)
    assert none.returncode == 2 and "no torchvision classifier matches" in none.stderr
