"""The type checker: clean on trainkit, and strict enough that a misspelt attribute of a config object fails."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

SNIPPET = """
from trainkit.run.config import Config
from trainkit.data.schema import DataConfig


def batches(cfg: DataConfig) -> int:
    return cfg.batch_sise


def epochs(cfg):  # an unannotated function is checked too (check_untyped_defs)
    c: Config = cfg
    return c.train.epoch
"""


def mypy(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("mypy", path=str(ROOT / ".venv" / "bin")) or shutil.which("mypy")
    cmd = [exe] if exe else [sys.executable, "-m", "mypy"]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mypy_catches_a_misspelt_config_attribute(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(SNIPPET)
    proc = mypy("--config-file", str(ROOT / "pyproject.toml"), str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '"DataConfig" has no attribute "batch_sise"; maybe "batch_size"?' in proc.stdout, proc.stdout
    assert '"TrainConfig" has no attribute "epoch"; maybe "epochs"?' in proc.stdout, proc.stdout


@pytest.mark.slow
def test_mypy_is_clean_on_trainkit():
    proc = mypy()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
