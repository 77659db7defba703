"""checkpoint: atomic writes, weights_only loading, hostile and broken files, model mismatches."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import Payload, run_cli
from torch import nn

from trainkit.errors import CheckpointError
from trainkit.store import checkpoint
from trainkit.store.files import temporary_name


def test_atomic_save_round_trip_and_no_temporary_left(tmp_path):
    state = {"format": checkpoint.FORMAT, "model": {"w": torch.arange(4.0)}, "epoch": 3}
    checkpoint.atomic_save(state, tmp_path / "last.pt")
    (tmp_path / ".last.pt.tmp-99999").write_bytes(b"left by a killed run")
    checkpoint.atomic_save(state, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))


def test_rng_state_round_trips_through_weights_only(tmp_path):
    torch.manual_seed(5)
    state = checkpoint.rng_state()
    checkpoint.atomic_save({"rng": state}, tmp_path / "r.pt")
    a = torch.rand(3)
    checkpoint.set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), a)


def test_pickled_callable_is_refused_and_never_runs(tmp_path):
    sentinel = tmp_path / "payload-ran"
    torch.save({"format": checkpoint.FORMAT, "model": {}, "x": Payload(str(sentinel))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused: it holds pickled Python objects .*posix.system|refused"):
        checkpoint.load_checkpoint(tmp_path / "evil.pt")
    assert not sentinel.exists()
    assert pickle.loads(pickle.dumps(Payload(str(sentinel)))) == 0 and sentinel.exists()  # the payload is real


def test_truncated_missing_and_foreign_files(tmp_path):
    checkpoint.atomic_save({"format": checkpoint.FORMAT, "model": {"w": torch.randn(1000)}}, tmp_path / "ok.pt")
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt: not a readable checkpoint, truncated or corrupt"):
        checkpoint.load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match=r"nope.pt: checkpoint not found"):
        checkpoint.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a trainkit checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "bare.pt")


def test_checkpoint_of_another_model_lists_keys_and_shapes():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    other = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2), nn.Linear(2, 2))
    state = other.state_dict()
    del state["2.bias"]
    with pytest.raises(CheckpointError) as exc:
        checkpoint.load_state(model, state, "ckpt.pt")
    msg = str(exc.value)
    assert "missing keys: 2.bias" in msg
    assert "unexpected keys: 3.weight, 3.bias" in msg
    assert "shape mismatches (checkpoint vs model): 0.weight (3, 5) vs (3, 4)" in msg


def test_ddp_and_compile_prefixes_are_stripped():
    model = nn.Linear(2, 2)
    state = {f"module._orig_mod.{k}": v for k, v in nn.Linear(2, 2).state_dict().items()}
    checkpoint.load_state(model, state, "x")
    assert torch.equal(model.weight, state["module._orig_mod.weight"])


def test_unwrap_returns_the_plain_model():
    inner = nn.Linear(2, 2)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = inner

    assert checkpoint.unwrap(Wrapper()) is inner
    assert list(checkpoint.unwrap(Wrapper()).state_dict()) == ["weight", "bias"]


def test_write_error_keeps_the_previous_checkpoint(tmp_path):
    from trainkit.errors import TrainingError

    checkpoint.atomic_save({"format": checkpoint.FORMAT, "epoch": 1}, tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    # A real ENOSPC: the temporary file is a link to /dev/full.
    temporary_name(tmp_path / "last.pt").symlink_to("/dev/full")
    with pytest.raises(
        TrainingError,
        match=r"could not save checkpoint .*last.pt: No space left on device; the previous last.pt is intact",
    ):
        checkpoint.atomic_save(
            {"format": checkpoint.FORMAT, "epoch": 2, "w": torch.randn(100_000)}, tmp_path / "last.pt"
        )
    assert (tmp_path / "last.pt").read_bytes() == before
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


GOLDEN = Path(__file__).parent / "golden" / "checkpoint-flat-layout" / "last.pt"


def test_a_checkpoint_of_the_flat_layout_still_evaluates_and_resumes(tmp_path, tiny_data):
    """tests/golden/checkpoint-flat-layout/last.pt was written by trainkit before its subpackages (09026f6), by
    tiny_config with train.ema and a StepLR schedule, one epoch on the images `tiny_data` writes; its eval then
    gave val_loss 0.6556187272071838 on them."""
    ckpt = tmp_path / "old" / "last.pt"
    ckpt.parent.mkdir()
    shutil.copy(GOLDEN, ckpt)
    out = tmp_path / "eval.json"
    evaluated = run_cli("eval", "--ckpt", str(ckpt), "--data", str(tiny_data / "val"), "--out", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(out.read_text())
    assert result["weights"] == "ema" and result["epoch"] == 1 and result["samples"] == 10
    assert abs(result["val_loss"] - 0.6556187272071838) < 1e-6
    sets = ["--set", f"data.train={tiny_data / 'train'}", "--set", f"data.val={tiny_data / 'val'}"]
    resumed = run_cli("train", "--resume", str(ckpt), *sets, "--set", "train.epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 2/2" in resumed.stdout and "epoch 1/2 |" not in resumed.stdout
    assert checkpoint.load_checkpoint(ckpt.parent / "last.pt")["epoch"] == 2
