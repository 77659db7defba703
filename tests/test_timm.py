"""`model.timm`: timm's architectures through `timm.create_model`, their weights through timm's own loading from
the Hugging Face cache (this machine has no network: the test lays a real safetensors file where `hf download`
puts it, in a temporary HF_HOME), `model.weights: FILE` through `pretrained_cfg_overlay`, and every command on a
small timm model (`test_resnet`, 0.4M parameters) with random weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from conftest import make_image_folder, run_cli, tiny_config, write_yaml

from trainkit.errors import ConfigError
from trainkit.models import build as models
from trainkit.run import config
from trainkit.store import checkpoint

TAG = "test_resnet.r160_in1k"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def lay_hub_weights(hf_home, tag: str = TAG, seed: int = 3) -> dict[str, torch.Tensor]:
    """A 1000-class state_dict of `tag` where `hf download timm/<tag>` puts it: the cache's refs and snapshot."""
    torch.manual_seed(seed)
    state = timm.create_model(tag.split(".")[0]).state_dict()
    repo = hf_home / "hub" / f"models--timm--{tag}"
    (repo / "snapshots" / SNAPSHOT).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    safetensors.torch.save_file(state, repo / "snapshots" / SNAPSHOT / "model.safetensors")
    return state


def timm_cfg(**model) -> config.Config:
    return config.from_dict({"data": {"train": "a", "val": "b"}, "model": {"timm": "test_resnet", **model}})


def run_config(tiny_data, run_dir, **model) -> dict:
    cfg = tiny_config(tiny_data, run_dir, train={"epochs": 1})
    cfg["model"] = {"timm": "test_resnet", **model}
    cfg["data"]["transforms"] = {"train": ["ToTensor", {"Normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}]}
    return cfg


def test_names_and_tags_are_checked_with_a_did_you_mean():
    assert timm_cfg(pretrained=True).model.net == TAG
    assert timm_cfg(pretrained="r160_in1k").model.net == TAG
    assert config.from_dict({"data": {"train": "a", "val": "b"}, "model": {"timm": TAG, "pretrained": True}}).model.net == TAG  # fmt: skip
    with pytest.raises(ConfigError, match=r"model.timm: timm has no model 'test_resnt'; did you mean 'test_resnet'"):
        timm_cfg(timm="test_resnt")
    with pytest.raises(ConfigError, match=r"model.pretrained: test_resnet has no weights 'r16_in1k'; did you mean 'r160_in1k'\?; its weights are r160_in1k"):  # fmt: skip
        timm_cfg(pretrained="r16_in1k")
    with pytest.raises(ConfigError, match="model.pretrained: timm has no pretrained weights for test_coatnet"):
        timm_cfg(timm="test_coatnet", pretrained=True)
    with pytest.raises(ConfigError, match="model.args.pretrained: weights come from model.pretrained or model.weights"):
        timm_cfg(args={"pretrained": True})


def test_the_transforms_default_to_timms_data_config_for_the_weights():
    data = timm.data.resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(TAG).to_dict())
    cfg = timm_cfg(pretrained=True)
    normalize = {"Normalize": {"mean": list(data["mean"]), "std": list(data["std"])}}
    crop = data["input_size"][-1]
    assert cfg.data.transforms.val == [{"Resize": {"size": int(crop / data["crop_pct"])}}, {"CenterCrop": crop}, "ToTensor", normalize]  # fmt: skip
    assert cfg.data.transforms.train == [{"RandomResizedCrop": {"size": crop}}, "RandomHorizontalFlip", "ToTensor", normalize]  # fmt: skip
    assert timm_cfg().data.transforms.val is None  # random weights: no preprocessing to match


def test_cached_weights_load_with_a_new_head_and_the_hub_is_not_asked(tmp_path, monkeypatch):
    state = lay_hub_weights(tmp_path / "hf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    notes: list[str] = []
    cfg = timm_cfg(pretrained=True).model
    model = models.build_model(cfg, 0, notes, checkpoint.load_weights, num_classes=5, check_file=checkpoint.check_weights_file)  # fmt: skip
    assert torch.equal(model.state_dict()["layer4.0.conv1.weight"], state["layer4.0.conv1.weight"])
    assert model.fc.out_features == 5
    assert notes == [f"model.pretrained {TAG}: fc not loaded (the head has 5 classes, the weights 1000)"]


@pytest.mark.slow
def test_train_from_the_hub_cache_then_eval_report_and_imagenet_labels(tmp_path, tiny_data):
    lay_hub_weights(tmp_path / "hf")
    env = {"HF_HOME": str(tmp_path / "hf")}
    cfg = run_config(tiny_data, tmp_path / "run", pretrained=True)
    cfg["log"]["report"] = True
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"model.pretrained {TAG}: fc not loaded (the head has 2 classes, the weights 1000)" in proc.stdout
    ckpt = checkpoint.load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["pretrained"]["name"] == f"timm {TAG}" and ckpt["pretrained"]["url"] == f"hf-hub:timm/{TAG}"
    assert "pretrained_categories" not in ckpt  # a head of the data's 2 classes: ImageNet's names do not apply
    assert f"timm {TAG}" in (tmp_path / "run" / "report.html").read_text()
    evaluated = run_cli("eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "e.json"))
    assert evaluated.returncode == 0, evaluated.stderr  # no HF_HOME: the checkpoint holds the weights
    wrong = run_config(tiny_data, tmp_path / "wrong", pretrained=True, args={"num_classes": 1000})
    refused = run_cli("train", "--config", str(write_yaml(tmp_path / "w.yaml", wrong)), env=env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "model: its output has shape [1000] per image, and the data has 2 classes: give its head 2 outputs" in refused.stderr  # fmt: skip


@pytest.mark.slow
def test_a_run_that_keeps_the_1000_classes_keeps_their_names_and_predict_prints_them(tmp_path):
    """Data in ImageNet's layout (1000 folders in the order of ImageNet's indices) on the weights' own head:
    the checkpoint keeps the weights' categories, and predict names ImageNet's classes, not the folders."""
    lay_hub_weights(tmp_path / "hf")
    counts = {f"n{i:08d}": 1 for i in range(1000)}
    make_image_folder(tmp_path / "data" / "train", counts, size=16, seed=1)
    make_image_folder(tmp_path / "data" / "val", counts, size=16, seed=2)
    cfg = run_config(tmp_path / "data", tmp_path / "keep", pretrained=True)
    cfg["data"]["batch_size"] = 100
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "k.yaml", cfg)), env={"HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "not loaded" not in proc.stdout  # the head is the weights' own
    ckpt = checkpoint.load_checkpoint(tmp_path / "keep" / "last.pt")
    assert ckpt["pretrained_categories"][:2] == ["tench", "goldfish"] and len(ckpt["pretrained_categories"]) == 1000
    out = tmp_path / "p.csv"
    files = [str(tmp_path / "data" / "val" / f"n{i:08d}") for i in (0, 1, 2)]
    predicted = run_cli("predict", "--ckpt", str(tmp_path / "keep" / "last.pt"), *files, "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    names = [row.split(",")[1] for row in out.read_text().splitlines()[1:]]
    assert len(names) == 3 and set(names) <= set(ckpt["pretrained_categories"])


def test_not_cached_is_one_line_with_the_command_that_fetches_it(tmp_path, tiny_data):
    cfg = run_config(tiny_data, tmp_path / "run", pretrained=True)
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), env={"HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    folder = tmp_path / "hf" / "hub" / f"models--timm--{TAG}"
    assert len(lines) == 1 and lines[0].startswith(f"trainkit: error: model.pretrained {TAG}: the weights are not in the Hugging Face cache ({folder})")  # fmt: skip
    assert lines[0].endswith(f"hf download timm/{TAG} model.safetensors")
    assert not (tmp_path / "run").exists()


def test_weights_from_a_file_keep_the_models_pretrained_cfg_and_a_bad_file_is_one_line(tmp_path, tiny_data):
    torch.manual_seed(5)
    state = timm.create_model("test_resnet", num_classes=2).state_dict()
    safetensors.torch.save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        cfg = run_config(tiny_data, tmp_path / name.replace(".", "-"), weights=str(tmp_path / name), freeze=["conv1"])
        proc = run_cli("train", "--config", str(write_yaml(tmp_path / f"{name}.yaml", cfg)))
        assert proc.returncode == 0, proc.stderr
        saved = checkpoint.load_checkpoint(tmp_path / name.replace(".", "-") / "last.pt")["model"]
        assert torch.equal(saved["conv1.0.weight"], state["conv1.0.weight"]), name
    assert timm_cfg(weights="w.pth").data.transforms.val[1] == {"CenterCrop": 160}  # the model's own pretrained_cfg
    (tmp_path / "photo.pth").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    cfg = run_config(tiny_data, tmp_path / "bad", weights=str(tmp_path / "photo.pth"))
    bad = run_cli("train", "--config", str(write_yaml(tmp_path / "bad.yaml", cfg)))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a PyTorch checkpoint (it is a JPEG image)" in bad.stderr and not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory) -> dict:
    """test_resnet with random weights, trained with EMA and the memory cache, 2 epochs then resumed to 3."""
    root = tmp_path_factory.mktemp("timm")
    make_image_folder(root / "data" / "train", {"cat": 12, "dog": 12}, size=40, seed=1)
    make_image_folder(root / "data" / "val", {"cat": 5, "dog": 5}, size=40, seed=2)
    cfg = tiny_config(root / "data", root / "run", train={"epochs": 2, "ema": {"decay": 0.9}})
    cfg["model"] = {"timm": "test_resnet", "args": {"drop_path_rate": 0.1}}
    cfg["data"]["cache"] = "memory"
    cfg["data"]["transforms"] = {"train": [{"Resize": 32}, "ToTensor"], "val": [{"Resize": 32}, "ToTensor"]}
    path = write_yaml(root / "c.yaml", cfg)
    first = run_cli("train", "--config", str(path))
    resumed = run_cli("train", "--config", str(path), "--set", "train.epochs=3", "--resume")
    return {"root": root, "first": first, "resumed": resumed, "ckpt": root / "run" / "last.pt"}


def test_a_timm_model_trains_with_ema_and_the_cache_and_resumes(timm_run):
    assert timm_run["first"].returncode == 0, timm_run["first"].stderr
    assert "cached (memory" in timm_run["first"].stdout
    assert timm_run["resumed"].returncode == 0, timm_run["resumed"].stderr
    ckpt = checkpoint.load_checkpoint(timm_run["ckpt"])
    assert ckpt["epoch"] == 3 and "ema" in ckpt and ckpt["config"]["model"]["timm"] == "test_resnet"


def test_eval_predict_features_and_inspect_shapes_on_a_timm_model(timm_run, tmp_path):
    ckpt, val = str(timm_run["ckpt"]), str(timm_run["root"] / "data" / "val")
    evaluated = run_cli("eval", "--ckpt", ckpt, "--out", str(tmp_path / "e.json"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "e.json").read_text())["samples"] == 10
    predicted = run_cli("predict", "--ckpt", ckpt, val, "--out", str(tmp_path / "p.csv"))
    assert predicted.returncode == 0, predicted.stderr
    assert {r.split(",")[1] for r in (tmp_path / "p.csv").read_text().splitlines()[1:]} <= {"cat", "dog"}
    feats = run_cli("features", "--ckpt", ckpt, "--data", val, "--layer", "layer4", "--layer", "global_pool", "--out", str(tmp_path / "f.npz"))  # fmt: skip
    assert feats.returncode == 0, feats.stderr
    arrays = np.load(tmp_path / "f.npz")
    width = timm.create_model("test_resnet").num_features
    assert arrays["layer4"].shape == arrays["global_pool"].shape == (10, width)  # timm's layer names
    shapes = run_cli("inspect-shapes", "--ckpt", ckpt)
    assert shapes.returncode == 0, shapes.stderr
    assert "layer4" in shapes.stdout and "global_pool" in shapes.stdout and "[1, 2]" in shapes.stdout


@pytest.mark.parametrize("fmt,suffix", [("torchscript", "pt"), ("exported-program", "pt2"), ("onnx", "onnx")])
def test_export_of_a_timm_model_in_each_format(timm_run, tmp_path, fmt, suffix):
    out = tmp_path / f"model.{suffix}"
    proc = run_cli("export", "--ckpt", str(timm_run["ckpt"]), "--format", fmt, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0 and json.loads(out.with_name(f"model.{suffix}.json").read_text())["classes"] == ["cat", "dog"]  # fmt: skip


@pytest.mark.slow
def test_a_timm_model_under_ddp(timm_run):
    root = timm_run["root"]
    cfg = tiny_config(root / "data", root / "ddp", train={"epochs": 1})
    cfg["model"] = {"timm": "test_resnet"}
    cfg["data"]["transforms"] = {"train": [{"Resize": 32}, "ToTensor"], "val": [{"Resize": 32}, "ToTensor"]}
    proc = run_cli("train", "--config", str(write_yaml(root / "ddp.yaml", cfg)), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint.load_checkpoint(root / "ddp" / "last.pt")["config"]["model"]["timm"] == "test_resnet"


def test_the_models_table_lists_timm_tags_and_the_hub_cache(tmp_path):
    lay_hub_weights(tmp_path / "hf")
    proc = run_cli("models", "test_res*", "--source", "timm", env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["model", "params", "weights", "top-1", "input", "cached"]
    params = f"{sum(p.numel() for p in timm.create_model('test_resnet').parameters()) / 1e6:.1f}M"
    assert lines[1].split() == ["test_resnet", params, "r160_in1k", "-", "160", "yes"]
    empty = run_cli("models", "test_res*", "--source", "timm", env={"HF_HOME": str(tmp_path / "none")})
    assert empty.stdout.splitlines()[1].split()[-1] == "no"
