"""shapes: per-layer rows, golden tables, the diagnosis of a failing layer, and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import run_cli, tiny_config, write_yaml

from trainkit.models import build as models
from trainkit.models import shapes
from trainkit.run import config

GOLDEN = Path(__file__).parent / "golden"


def model_of(tmp_path: Path, text: str) -> torch.nn.Module:
    path = tmp_path / "cfg.yaml"
    path.write_text("data: {train: a, val: b}\n" + text)
    return models.build_model(config.load_config(path).model, seed=0)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), f"table differs from {path}; rerun with UPDATE_GOLDEN=1 if intended"


def expected_resnet18_shape(path: str) -> tuple:
    """The published resnet18 shapes at 224x224: stage k has 64*2^(k-1) channels at 56/2^(k-1) pixels."""
    fixed = {
        "conv1": (1, 64, 112, 112),
        "bn1": (1, 64, 112, 112),
        "relu": (1, 64, 112, 112),
        "maxpool": (1, 64, 56, 56),
        "avgpool": (1, 512, 1, 1),
        "fc": (1, 1000),
    }
    if path in fixed:
        return fixed[path]
    stage = int(path[len("layer")])
    return (1, 64 * 2 ** (stage - 1), 56 // 2 ** (stage - 1), 56 // 2 ** (stage - 1))


def test_resnet18_leaf_shapes_and_parameter_count():
    model = torchvision.models.resnet18()
    report = shapes.collect(model, (3, 224, 224))
    assert report.failure is None
    assert report.total_params == 11_689_512 and report.trainable_params == 11_689_512
    leaves = [r for r in report.rows if r.leaf]
    assert len({r.path for r in leaves}) == len([m for m in model.modules() if not list(m.children())])
    for row in leaves:
        assert row.output_shape == expected_resnet18_shape(row.path), row.path
    assert report.param_bytes == 11_689_512 * 4


SEQUENTIAL = """
model:
  sequential:
    - Conv2d: [3, 8, 3, 1, 1]
    - BatchNorm2d: [8]
    - ReLU: {inplace: true}
    - MaxPool2d: [2]
    - Flatten
    - Linear: [512, 10]
  freeze: ["1"]
"""

MODULEDICT = """
model:
  moduledict:
    stem: {sequential: {conv: {Conv2d: [3, 4, 3, 2, 1]}, act: ReLU}}
    pool: {AdaptiveAvgPool2d: [1]}
    flat: Flatten
    head: {Linear: [4, 2]}
  forward: [stem, pool, flat, head]
"""


def test_golden_sequential_table(tmp_path):
    report = shapes.collect(model_of(tmp_path, SEQUENTIAL), (3, 16, 16))
    check_golden("sequential.txt", shapes.format_report(report))


def test_golden_moduledict_table(tmp_path):
    report = shapes.collect(model_of(tmp_path, MODULEDICT), (3, 16, 16))
    check_golden("moduledict.txt", shapes.format_report(report))


@pytest.mark.parametrize(
    "text,size,path,fix",
    [
        (
            "model: {sequential: [{Conv2d: [3, 32, 3, 1, 1]}, {MaxPool2d: [4]}, Flatten, {Linear: [4096, 10]}]}",
            (3, 32, 32),
            "3",
            "got 2048 = 32x8x8 features; Linear expects 4096: set in_features to 2048",
        ),
        (
            "model: {sequential: [{Conv2d: [3, 16, 3]}, {Conv2d: [32, 8, 3]}]}",
            (3, 16, 16),
            "1",
            "got 16 channels; Conv2d expects 32: set in_channels to 16",
        ),
        (
            "model: {sequential: [{Conv2d: [3, 16, 3]}, {BatchNorm2d: [8]}]}",
            (3, 16, 16),
            "1",
            "got 16 channels; BatchNorm2d expects 8: set num_features to 16",
        ),
    ],
)
def test_mismatches_are_diagnosed_with_a_fix(tmp_path, text, size, path, fix):
    model = model_of(tmp_path, text)
    model.train()
    report = shapes.collect(model, size)
    assert report.failure is not None
    assert report.failure.row.path == path and report.failure.fix == fix
    assert all(r.done for r in report.rows[:-1]) and not report.rows[-1].done  # table up to the failing layer
    text_out = shapes.format_report(report)
    assert f"FAILED at {path}" in text_out and fix in text_out
    # hooks removed and the mode restored, also on failure
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_eval_mode_restored_and_hooks_removed_after_success(tmp_path):
    model = model_of(tmp_path, SEQUENTIAL)
    model.eval()
    shapes.collect(model, (3, 16, 16))
    assert not model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_inspect_shapes_cli_from_config_and_failure_exit_code(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path / "run")
    ok = run_cli("inspect-shapes", "--config", str(write_yaml(tmp_path / "ok.yaml", cfg)))
    assert ok.returncode == 0, ok.stderr
    assert "Input size: [3, 16, 16]" in ok.stdout  # from the first val sample after its transforms
    assert "Total params: 122" in ok.stdout  # Conv2d(3, 4, 3) + Linear(4, 2)
    cfg["model"]["sequential"][-1] = {"Linear": [8, 2]}
    bad = write_yaml(tmp_path / "bad.yaml", cfg)
    proc = run_cli("inspect-shapes", "--config", str(bad), "--input-size", "3", "16", "16")
    assert proc.returncode == 1
    assert "fix: got 4 = 4x1x1 features; Linear expects 8: set in_features to 4" in proc.stdout
    train = run_cli("train", "--config", str(bad))
    assert train.returncode == 2 and "set in_features to 4" in train.stderr
    assert not (tmp_path / "run").exists()  # a shape bug costs seconds and writes nothing
