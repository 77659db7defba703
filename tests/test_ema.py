"""train.ema: the moving average of the weights, its updates, evaluation, checkpoints and `trainkit eval`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_user_error, run_cli, tiny_config, write_yaml
from torch import nn

from trainkit.models import build as models
from trainkit.models.ema import EMA
from trainkit.run import config
from trainkit.store import checkpoint


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())


def test_an_update_moves_every_float_tensor_by_one_minus_decay_and_copies_counters():
    model = small_net()
    ema = EMA(model, decay=0.9, warmup=False)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    model.train()
    model(torch.randn(8, 3, 6, 6))  # moves BatchNorm's running statistics and its batch counter
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(step=1)
    live = model.state_dict()
    for name, value in ema.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * live[name], msg=name)
            assert not torch.equal(value, before[name]), name
        else:
            assert torch.equal(value, live[name]), name  # num_batches_tracked: copied, not averaged
    assert ema.state_dict()["1.num_batches_tracked"].item() == 1


def test_every_n_steps_leaves_the_steps_between_alone():
    model = small_net()
    ema = EMA(model, decay=0.5, every=3, warmup=False)
    start = ema.state_dict()["0.weight"].clone()
    with torch.no_grad():
        model[0].weight.add_(2.0)
    for step in (1, 2):
        ema.update(step)
        assert torch.equal(ema.state_dict()["0.weight"], start)
    ema.update(3)
    torch.testing.assert_close(ema.state_dict()["0.weight"], start + 1.0)


def test_warmup_starts_low_and_reaches_the_decay():
    ema = EMA(small_net(), decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(90) == pytest.approx(0.91)
    assert ema.decay_at(100_000) == 0.999
    assert EMA(small_net(), decay=0.999, warmup=False).decay_at(0) == 0.999


def test_the_average_is_evaluated_saved_and_reproduced_by_eval(tmp_path, tiny_data):
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        model={
            "sequential": [
                {"Conv2d": [3, 4, 3, 1, 1]},
                {"BatchNorm2d": [4]},
                "ReLU",
                {"AdaptiveAvgPool2d": [1]},
                "Flatten",
                {"Linear": [4, 2]},
            ]
        },
        train={"epochs": 3, "log_every": 2, "ema": {"decay": 0.8}},
    )
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "moving average of the weights (train.ema: decay 0.8, every 1)" in proc.stdout
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ckpt["ema"].keys() == ckpt["model"].keys()
    assert not torch.equal(ckpt["ema"]["0.weight"], ckpt["model"]["0.weight"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = next(r for r in records if r["epoch"] == ckpt["epoch"])

    proc = run_cli("eval", "--ckpt", str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "ema.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the moving average of the weights (train.ema)" in proc.stdout
    result = json.loads((tmp_path / "ema.json").read_text())
    assert result["weights"] == "ema"
    assert result["val_loss"] == pytest.approx(trained["val_loss"], abs=1e-6)
    assert result["val_acc"] == pytest.approx(trained["val_acc"])

    # the same checkpoint without its average: other numbers, so training did evaluate the average
    ckpt["ema"] = None
    torch.save(ckpt, tmp_path / "raw.pt")
    proc = run_cli("eval", "--ckpt", str(tmp_path / "raw.pt"), "--out", str(tmp_path / "raw.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert raw["weights"] == "model"
    assert abs(raw["val_loss"] - trained["val_loss"]) > 1e-4

    # model.weights from such a checkpoint starts from the average
    cfg["model"]["weights"] = str(tmp_path / "run" / "best.pt")
    model = models.build_model(config.from_dict(cfg).model, load_weights=checkpoint.load_weights)  # as a run does
    assert torch.equal(
        model.state_dict()["0.weight"],
        checkpoint.inference_weights(torch.load(tmp_path / "run" / "best.pt", weights_only=True))["0.weight"],
    )


@pytest.mark.parametrize(
    ("ema", "fragment"),
    [({"decay": 1.0}, "train.ema.decay: must be in [0, 1), got 1.0"), ({"every": 0}, "train.ema.every: must be a")],
)
def test_a_bad_ema_setting_is_one_line_and_exit_2(tmp_path, tiny_data, ema, fragment):
    cfg = tiny_config(tiny_data, tmp_path / "run", train={"epochs": 1, "ema": ema})
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert_user_error(proc, fragment)
    assert not (tmp_path / "run").exists()
