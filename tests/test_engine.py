"""engine: device choice, optimizer groups, schedulers, early stopping, clipping, accumulation, NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, tiny_config

from trainkit.config.train import LossConfig, OptimConfig
from trainkit.errors import DeviceError, TrainingError
from trainkit.models import optim
from trainkit.run import config, devices
from trainkit.run import loop as engine
from trainkit.run.build import Run, build_run


def setup_run(tmp_path: Path, data_root: Path, **sections) -> Run:
    cfg = config.from_dict(tiny_config(data_root, tmp_path / "run", **sections))
    return build_run(cfg)


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_device_selection():
    assert devices.select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="device: cuda:3 does not exist; this machine has no usable CUDA device"):
            devices.select_device("cuda:3")


def test_no_weight_decay_on_biases_and_norm_weights_by_default(tmp_path, tiny_data):
    model_spec = {
        "sequential": [
            {"Conv2d": [3, 4, 3]},
            {"BatchNorm2d": [4]},
            {"AdaptiveAvgPool2d": [1]},
            "Flatten",
            {"Linear": [4, 2]},
        ]
    }
    run = setup_run(tmp_path, tiny_data, model=model_spec, optim={"type": "SGD", "lr": 0.1, "weight_decay": 0.01})
    groups = run.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert sum(p.numel() for p in groups[0]["params"]) == 4 * 3 * 9 + 2 * 4  # conv and linear weights only
    cfg = OptimConfig(type="SGD", lr=0.1, decay_norm_and_bias=True, kwargs={"weight_decay": 0.01})
    assert len(optim.build_optimizer(run.model, cfg).param_groups) == 1


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
def test_onecycle_steps_per_step_and_warmup_ramps(tmp_path, tiny_data):
    run = setup_run(tmp_path, tiny_data, scheduler={"type": "OneCycleLR", "max_lr": 0.5})
    engine.train_one_epoch(run, 0)
    assert run.scheduler.last_epoch == len(run.data.train_loader) == 6
    warm = setup_run(
        tmp_path,
        tiny_data,
        scheduler={"type": "StepLR", "step_size": 10, "warmup_epochs": 2},
        train={"epochs": 4, "log_every": 2},
    )
    lrs = [optim.current_lr(warm.optimizer)]
    for _ in range(3):
        warm.scheduler.step()
        lrs.append(optim.current_lr(warm.optimizer))
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(0.1) and lrs[3] == pytest.approx(0.1)


def test_loss_weight_by_class_name(tmp_path, tiny_data):
    loss = optim.build_loss(LossConfig(kwargs={"weight": {"dog": 3.0}}), ["cat", "dog"])
    assert torch.equal(loss.weight, torch.tensor([1.0, 3.0]))


def test_grad_clipping_bounds_the_update(tmp_path):
    root = tmp_path / "d"
    make_image_folder(root / "train", {"cat": 4, "dog": 4})
    make_image_folder(root / "val", {"cat": 1, "dog": 1})
    common = {"data": {"batch_size": 8}, "optim": {"type": "SGD", "lr": 1.0}}
    moves = {}
    for name, clip in {"none": None, "norm": {"max_norm": 0.001}, "value": {"value": 0.0001}}.items():
        run = setup_run(tmp_path / name, root, train={"epochs": 1, "grad_clip": clip}, **common)
        before = flat_params(run.model)
        engine.train_one_epoch(run, 0)
        moves[name] = flat_params(run.model) - before
    assert moves["none"].norm() > 0.01  # without clipping the step is large
    assert moves["norm"].norm() <= 0.001 * 1.0 + 1e-6  # ||lr * g|| <= lr * max_norm
    assert moves["value"].abs().max() <= 0.0001 + 1e-7


def test_accumulating_two_steps_matches_one_double_batch(tmp_path):
    root = tmp_path / "d"
    make_image_folder(root / "train", {"cat": 4, "dog": 4})
    make_image_folder(root / "val", {"cat": 1, "dog": 1})
    seq = {"sampler": "sequential"}
    a = setup_run(tmp_path / "a", root, data={"batch_size": 4, **seq}, train={"epochs": 1, "accumulate": 2})
    b = setup_run(tmp_path / "b", root, data={"batch_size": 8, **seq}, train={"epochs": 1})
    assert torch.equal(flat_params(a.model), flat_params(b.model))
    engine.train_one_epoch(a, 0)
    engine.train_one_epoch(b, 0)
    assert a.state.step == b.state.step == 1
    assert torch.allclose(flat_params(a.model), flat_params(b.model), atol=1e-6)


def test_early_stopping_stops_at_the_right_epoch(tmp_path, tiny_data):
    es = {"monitor": "val_loss", "mode": "min", "patience": 2, "min_delta": 100.0}  # nothing beats epoch 1 by 100
    run = setup_run(tmp_path, tiny_data, train={"epochs": 10, "early_stopping": es, "log_every": 2})
    engine.fit(run)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["early_stopping"]["bad_epochs"] == 2


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good(tmp_path, tiny_data):
    run = setup_run(tmp_path, tiny_data, optim={"type": "SGD", "lr": 1.0e30}, train={"epochs": 3, "log_every": 1})
    # no checkpoint exists yet: the line says so, and names none (it named a last.pt that did not exist)
    with pytest.raises(TrainingError, match=r"loss became nan in epoch 1 by step \d+; no checkpoint was saved yet"):
        engine.fit(run)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"channels_last": True}, {"amp": "fp16"}])
def test_amp_and_channels_last_train(tmp_path, tiny_data, options):
    run = setup_run(tmp_path, tiny_data, train={"epochs": 1, "log_every": 2, **options})
    record = engine.fit(run)
    assert record["epoch"] == 1 and record["train_loss"] == record["train_loss"]  # finite, not NaN
    assert run.scaler.is_enabled() == (options.get("amp") == "fp16")


@pytest.mark.slow
def test_torch_compile_trains(tmp_path, tiny_data):
    run = setup_run(tmp_path, tiny_data, train={"epochs": 1, "compile": True, "log_every": 2})
    record = engine.fit(run)
    assert record["val_acc"] >= 0.0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in state["model"])  # saved without the compile wrapper
