"""Each command imports what it uses and nothing more: after a real run of the command, in a fresh interpreter,
`sys.modules` holds none of the optional heavy libraries (matplotlib, tensorboard, onnx, optuna, mlflow,
timm) that it does not use; `--help` and `runs` hold no torch either (benchmarks/startup.py times them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import make_image_folder, run_cli, tiny_config, write_yaml

OPTIONAL = ("matplotlib", "tensorboard", "onnx", "onnxscript", "optuna", "mlflow", "timm", "sklearn", "pandas")
TORCH = ("torch", "torchvision", "numpy")

PROBE = """
import json, sys
from trainkit.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:  # --help
    code = exc.code
print("MODULES " + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[1]))))
sys.exit(code)
"""


def imported(cwd, *argv: str, names: tuple[str, ...] = OPTIONAL + TORCH) -> set[str]:
    """The top-level packages of `names` that `trainkit ARGV` has imported when it ends."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(names), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES "))
    return {m.split(".")[0] for m in json.loads(line.removeprefix("MODULES "))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run and one image."""
    tmp = tmp_path_factory.mktemp("imports")
    data = tmp / "data"
    make_image_folder(data / "train", {"cat": 8, "dog": 8}, seed=1)
    make_image_folder(data / "val", {"cat": 4, "dog": 4}, seed=2)
    cfg = write_yaml(tmp / "c.yaml", tiny_config(data, tmp / "runs" / "tiny"))
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp, cfg, next((data / "val").glob("*/*.png"))


def test_help_and_runs_import_no_torch(trained):
    tmp, _, _ = trained
    assert imported(tmp, "--help") == set()
    assert imported(tmp, "runs", str(tmp / "runs")) == set()


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--config", "{cfg}", "--overwrite", "--set", "train.epochs=1", "--set", "log.report=false"],
        ["eval", "--ckpt", "{run}/best.pt"],
        ["predict", "--ckpt", "{run}/best.pt", "{image}"],
        ["features", "--ckpt", "{run}/best.pt", "--data", "{image}", "--layer", "2", "--out", "{tmp}/f.npz"],
        ["export", "--ckpt", "{run}/best.pt", "--format", "torchscript", "--out", "{tmp}/m.pt"],
        ["inspect-shapes", "--config", "{cfg}"],
        ["models", "resnet*"],
    ],
    ids=lambda c: c[0],
)
def test_a_command_imports_none_of_the_optional_libraries_it_does_not_use(trained, command):
    tmp, cfg, image = trained
    argv = [a.format(cfg=cfg, run=tmp / "runs" / "tiny", image=image, tmp=tmp) for a in command]
    found = imported(tmp, *argv)
    assert "torch" in found  # the probe sees what the command imported
    assert not found & set(OPTIONAL), f"trainkit {command[0]} imported {sorted(found & set(OPTIONAL))}"


def test_the_probe_sees_an_optional_library_a_command_uses(trained):
    tmp, _, _ = trained
    assert "timm" in imported(tmp, "models", "resnet18", "--source", "timm")


def test_evaluating_uses_torchnets_meters_without_its_visdom_logger(trained):
    tmp, _, _ = trained
    found = imported(
        tmp, "eval", "--ckpt", str(tmp / "runs" / "tiny" / "best.pt"), names=("torchnet", "visdom", "requests")
    )
    assert found == {"torchnet"}  # torchnet's __init__ would import visdom, and visdom requests
