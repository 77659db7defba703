"""model.whiten: a first convolution initialized as a whitening of the training images' patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_user_error, run_cli, tiny_config, write_yaml
from PIL import Image
from torch import nn

from trainkit.run.whiten import whitening_filters

WHITENED = {
    "sequential": [
        {"Conv2d": {"in_channels": 3, "out_channels": 24, "kernel_size": 2}},
        "GELU",
        {"Conv2d": [24, 8, 3, 1, 1]},
        {"BatchNorm2d": [8]},
        "ReLU",
        {"AdaptiveAvgPool2d": [1]},
        "Flatten",
        {"Linear": [8, 2]},
    ],
    "whiten": {"layer": "0", "eps": 1.0e-9},
    "freeze": ["0.weight", "0.bias"],
}


def output_covariance(conv: nn.Conv2d, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        y = conv(images).permute(0, 2, 3, 1).reshape(-1, conv.out_channels).double()
    return y.mean(0), torch.cov(y.T)


def test_the_outputs_start_centred_and_decorrelated_with_unit_variance():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 12, 12)
    images = images + 0.8 * images.roll(1, dims=3) + 0.3 * images[:, :1]  # neighbours and channels correlated
    conv = nn.Conv2d(3, 12, 2)
    weight, bias = whitening_filters(conv, images, eps=1e-9)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    mean, cov = output_covariance(conv, images)
    torch.testing.assert_close(mean, torch.zeros(12, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=1e-3, rtol=0)
    # fewer filters than directions: the ones of largest variance, still whitened
    small = nn.Conv2d(3, 5, 2, bias=False)
    small.weight.data.copy_(whitening_filters(small, images, eps=1e-9)[0])
    torch.testing.assert_close(
        output_covariance(small, images)[1], torch.eye(5, dtype=torch.float64), atol=1e-3, rtol=0
    )


def test_training_starts_from_the_whitening_of_its_own_image_files(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path / "run", model=WHITENED, train={"epochs": 1, "log_every": 2})
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model.whiten: 0 initialized from the patches of 24 training images" in proc.stdout
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    conv = nn.Conv2d(3, 24, 2)
    conv.load_state_dict({"weight": state["0.weight"], "bias": state["0.bias"]})  # frozen: still the init
    torch.testing.assert_close(conv.weight[12:], -conv.weight[:12])  # +/- pairs
    files = sorted((tiny_data / "train").glob("*/*.png"))
    images = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255).permute(2, 0, 1) for f in files]
    )
    mean, cov = output_covariance(conv, images)
    eye = torch.eye(12, dtype=torch.float64)
    torch.testing.assert_close(
        cov, torch.cat([torch.cat([eye, -eye], 1), torch.cat([-eye, eye], 1)]), atol=2e-3, rtol=0
    )
    torch.testing.assert_close(mean, torch.zeros(24, dtype=torch.float64), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("whiten", "layer0", "fragment"),
    [
        ({"layer": "conv"}, None, "model.whiten.layer: no submodule named 'conv'"),
        ({"layer": "1"}, None, "model.whiten.layer: 1 is a GELU; name a Conv2d (groups 1) that sees the images"),
        ({"layer": "2"}, None, "model.whiten.layer: 2 takes 24 channels but the images have shape [3, 16, 16]"),
        ({"layer": "0"}, {"Conv2d": [3, 16, 2]}, "its 3x2x2 patches have 12 directions: use at most 12 out_channels"),
        ({"layer": "0", "eps": 0}, None, "model.whiten.eps: must be > 0, got 0"),
    ],
)
def test_a_layer_that_cannot_be_whitened_is_one_line_and_exit_2(tmp_path, tiny_data, whiten, layer0, fragment):
    model = {**WHITENED, "whiten": whiten}
    if layer0 is not None:
        model["sequential"] = [layer0, "GELU", {"Conv2d": [16, 8, 3, 1, 1]}, *WHITENED["sequential"][3:]]
    cfg = tiny_config(tiny_data, tmp_path / "run", model=model, train={"epochs": 1})
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert_user_error(proc, fragment)
    assert not (tmp_path / "run").exists()
