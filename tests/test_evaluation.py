"""evaluation: test-time augmentation, and `trainkit eval` reproducing what training reported."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, tiny_config, write_yaml
from test_e2e import records

from trainkit.errors import ConfigError
from trainkit.run import config
from trainkit.run.evaluation import tta_logits


def asymmetric_net(seed: int = 0) -> torch.nn.Module:
    """A linear map of the raw pixels: it sees left from right and every shift."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 5, 4))


def test_flip_tta_is_the_mean_over_the_image_and_its_mirror():
    net, x = asymmetric_net(), torch.rand(3, 3, 6, 5)
    plain = tta_logits(net, x)
    flipped = net(x.flip(3))
    assert not torch.allclose(plain, flipped)  # the net is not mirror-symmetric, so the test can fail
    torch.testing.assert_close(tta_logits(net, x, "flip"), (plain + flipped) / 2)


def test_flip_translate_weights_the_shifted_pairs_by_a_quarter():
    net, x = asymmetric_net(1), torch.rand(2, 3, 6, 5)

    def pair(v):
        return (net(v) + net(v.flip(3))) / 2

    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :6, :5], padded[..., 2:8, 2:7]
    expected = 0.5 * pair(x) + 0.25 * pair(up_left) + 0.25 * pair(down_right)
    torch.testing.assert_close(tta_logits(net, x, "flip_translate"), expected)
    assert not torch.allclose(tta_logits(net, x, "flip_translate"), tta_logits(net, x, "flip"))


def test_flip_translate_keeps_channels_last_inputs_working():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.rand(2, 3, 8, 8)
    dense = tta_logits(conv, x, "flip_translate")
    cl = tta_logits(
        conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last), "flip_translate"
    )
    torch.testing.assert_close(cl, dense)


def test_tta_on_a_batch_that_is_not_images_is_a_config_error():
    with pytest.raises(ConfigError, match=r"eval.tta: flip needs image batches \(N, C, H, W\), got shape \[2, 7\]"):
        tta_logits(torch.nn.Linear(7, 2), torch.rand(2, 7), "flip")


def test_tta_key_is_validated():
    with pytest.raises(ConfigError, match=r"eval\.tta: expected one of 'off', 'flip', 'flip_translate', got 'mirror'"):
        config.from_dict(
            {"data": {"train": "a", "val": "b"}, "model": {"sequential": ["Flatten"]}, "eval": {"tta": "mirror"}}
        )


def test_eval_reproduces_a_bf16_tta_run_and_can_switch_tta(tmp_path, tiny_data):
    """eval uses training's autocast and TTA: the reported val_loss comes back exactly; --tta overrides."""
    run_dir = tmp_path / "run"
    cfg = tiny_config(tiny_data, run_dir, train={"epochs": 1, "amp": "bf16"}, eval={"tta": "flip"})
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    reported = records(run_dir)[-1]
    ev = run_cli("eval", "--ckpt", str(run_dir / "last.pt"))
    assert ev.returncode == 0, ev.stderr
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["tta"] == "flip" and "test-time augmentation: flip" in ev.stdout
    assert result["val_loss"] == pytest.approx(reported["val_loss"], abs=1e-7)
    assert result["val_acc"] == reported["val_acc"]
    off = run_cli("eval", "--ckpt", str(run_dir / "last.pt"), "--tta", "off", "--out", str(tmp_path / "off.json"))
    assert off.returncode == 0, off.stderr
    plain = json.loads((tmp_path / "off.json").read_text())
    assert plain["tta"] == "off" and "test-time augmentation" not in off.stdout
    assert plain["val_loss"] != pytest.approx(reported["val_loss"], abs=1e-7)  # TTA changed the logits
