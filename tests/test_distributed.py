"""DDP with 2 processes on CPU (gloo), launched through torchrun by `trainkit train --nproc 2`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_user_error, make_image_folder, run_cli, tiny_config, write_yaml
from torch.utils.data import WeightedRandomSampler

from trainkit.data.samplers import EpochSampler, expected_mix, sample_class_weights
from trainkit.data.schema import SamplerConfig
from trainkit.store import checkpoint

# a PNG signature and end chunk around garbage: it passes the check at start and fails when decoded
UNDECODABLE_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2 + b"\x00\x00\x00\x00IEND\xaeB`\x82"

pytestmark = pytest.mark.slow


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_world(tmp_path_factory) -> dict:
    """One 2-process run and one 1-process run with the same global batch (2 x 4 = 8)."""
    root = tmp_path_factory.mktemp("ddp")
    make_image_folder(root / "data" / "train", {"cat": 20, "dog": 12}, seed=1)
    make_image_folder(root / "data" / "val", {"cat": 6, "dog": 5}, seed=2)  # odd: ranks get 6 and 5
    train = {"epochs": 3, "log_every": 2}
    aug = {"transforms": {"train": [{"RandomCrop": {"size": 16, "padding": 2}}, "RandomHorizontalFlip", "ToTensor"]}}
    two = write_yaml(
        root / "two.yaml", tiny_config(root / "data", root / "two", data={"batch_size": 4, **aug}, train=train)
    )
    one = write_yaml(
        root / "one.yaml", tiny_config(root / "data", root / "one", data={"batch_size": 8, **aug}, train=train)
    )
    proc2 = run_cli("train", "--config", str(two), "--nproc", "2")
    proc1 = run_cli("train", "--config", str(one))
    return {"root": root, "two": proc2, "one": proc1}


def test_two_processes_match_one_process_with_the_same_global_batch(ddp_world):
    assert ddp_world["two"].returncode == 0, ddp_world["two"].stderr[-3000:]
    assert ddp_world["one"].returncode == 0, ddp_world["one"].stderr
    two, one = records(ddp_world["root"] / "two"), records(ddp_world["root"] / "one")
    assert [r["epoch"] for r in two] == [1, 2, 3]
    # The same global batches, augmented the same way, averaged by DDP: the same training up to float
    # rounding. Stated tolerance: final accuracy within 0.05, weights within 1e-4.
    assert abs(two[-1]["val_acc"] - one[-1]["val_acc"]) <= 0.05
    w2 = torch.load(ddp_world["root"] / "two" / "last.pt", weights_only=True)["model"]
    w1 = torch.load(ddp_world["root"] / "one" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(w2[k], w1[k], atol=1e-4) for k in w1)
    assert two[-1]["train_loss"] == pytest.approx(one[-1]["train_loss"], abs=1e-4)  # metrics summed over ranks


def test_finetune_under_ddp_matches_one_process_across_its_switch(ddp_world):
    """DDP reduces the gradients of the parameters that train when it is made: at the switch the model is
    wrapped again, so the backbone trains on every rank from then on, as in one process."""
    root = ddp_world["root"]
    train = {"epochs": 2, "log_every": 2, "save_top_k": -1, "finetune": {"frozen_epochs": 1}}
    runs = {}
    for name, batch, nproc in (("ft2", 4, ["--nproc", "2"]), ("ft1", 8, [])):
        cfg = write_yaml(root / f"{name}.yaml", tiny_config(root / "data", root / name, data={"batch_size": batch}, train=train))  # fmt: skip
        proc = run_cli("train", "--config", str(cfg), *nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = proc
    assert "fine-tune: epoch 2: the backbone trains too" in runs["ft2"].stdout
    first, last = (
        checkpoint.load_checkpoint(next((root / "ft2").glob(f"epoch={e:03d}-*.pt")))["model"] for e in (1, 2)
    )
    assert not torch.equal(first["0.weight"], last["0.weight"])  # the backbone trained after the switch
    w1 = checkpoint.load_checkpoint(root / "ft1" / "last.pt")["model"]
    assert all(torch.allclose(last[k], w1[k], atol=1e-4) for k in w1), "the two ranks trained as one process does"
    assert [r["backbone_frozen"] for r in records(root / "ft2")] == [True, False]


def test_only_rank_0_writes_and_validation_counts_each_image_once(ddp_world):
    out = ddp_world["two"].stdout
    assert out.count("epoch 3/3 |") == 1  # one summary line: rank 0 alone prints
    assert ddp_world["two"].stderr == ""  # torchrun's start-up banner is not shown
    run_dir = ddp_world["root"] / "two"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.pt",
        "config.yaml",
        "last.pt",
        "metrics.jsonl",
        "samples.png",
        "status.json",
        "steps.jsonl",
    ]
    ev = run_cli("eval", "--ckpt", str(run_dir / "last.pt"), "--out", str(run_dir.parent / "eval.json"))
    assert ev.returncode == 0, ev.stderr
    result = json.loads((run_dir.parent / "eval.json").read_text())
    assert result["samples"] == 11
    assert result["val_acc"] == records(run_dir)[-1]["val_acc"]  # the DDP run's reduced metric, exactly


def test_a_ddp_checkpoint_loads_in_single_process_eval_and_inspect_shapes(ddp_world):
    run_dir = ddp_world["root"] / "two"
    state = torch.load(run_dir / "best.pt", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in state)
    best = max(records(run_dir), key=lambda r: r["val_acc"])
    ev = run_cli("eval", "--ckpt", str(run_dir / "best.pt"), "--out", str(run_dir.parent / "best.json"))
    assert ev.returncode == 0, ev.stderr
    assert json.loads((run_dir.parent / "best.json").read_text())["val_acc"] == best["val_acc"]
    shapes = run_cli("inspect-shapes", "--ckpt", str(run_dir / "best.pt"))
    assert shapes.returncode == 0 and "Total params: 122" in shapes.stdout


def test_the_distributed_weighted_sampler_draws_the_single_process_mix():
    targets = [0] * 300 + [1] * 100 + [2] * 50
    cfg = SamplerConfig(type="weighted", class_weights="balanced", num_samples=4000)
    classes = ["a", "b", "c"]
    weights = torch.tensor([sample_class_weights(cfg, targets, classes)[t] for t in targets], dtype=torch.double)

    def draws(rank: int, world: int) -> list[int]:
        gen = torch.Generator()
        sampler = EpochSampler(WeightedRandomSampler(weights, 4000, generator=gen), gen, seed=7, rank=rank, world=world)
        sampler.set_epoch(3)
        return [targets[i] for i, _ in sampler]

    single = draws(0, 1)
    shards = [draws(r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 2000
    counts = np.bincount(shards[0] + shards[1], minlength=3)
    assert counts.tolist() == np.bincount(single, minlength=3).tolist()  # one global sample, sharded
    assert np.allclose(counts / counts.sum(), expected_mix(cfg, targets, classes), atol=0.03)


def worker_pids(pid: int) -> list[int]:
    """The torchrun worker processes under a `trainkit train --nproc` launcher."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").iterdir():
            for child in (task / "children").read_text().split():
                todo.append(int(child))
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if b"trainkit" in cmd and b"torch.distributed.run" not in cmd:
                    found.append(int(child))
    return found


def start_nproc_2(cfg: Path, line_seen: str) -> tuple[subprocess.Popen, list[int]]:
    """`trainkit train --nproc 2` on `cfg`, once its output shows `line_seen`; the launcher and its two ranks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "train", "--config", str(cfg), "--nproc", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if line_seen in line or time.monotonic() > deadline:
            break
    workers = worker_pids(proc.pid)
    assert len(workers) == 2, workers
    return proc, workers


@pytest.mark.parametrize("target", ["one-rank", "launcher"])
def test_sigterm_stops_every_rank_with_one_checkpoint(tmp_path, target):
    data = tmp_path / "data"
    make_image_folder(data / "train", {"cat": 32, "dog": 32}, size=48, seed=3)
    make_image_folder(data / "val", {"cat": 4, "dog": 4}, size=48, seed=4)
    model = {
        "sequential": [
            {"Conv2d": [3, 64, 3, 1, 1]},
            "ReLU",
            {"Conv2d": [64, 64, 3, 1, 1]},
            "ReLU",
            {"AdaptiveAvgPool2d": [1]},
            "Flatten",
            {"Linear": [64, 2]},
        ]
    }
    cfg = write_yaml(
        tmp_path / "c.yaml", tiny_config(data, tmp_path / "run", model=model, train={"epochs": 50, "log_every": 1})
    )
    proc, workers = start_nproc_2(cfg, "epoch 2/50 step 2/8")
    victim = workers[-1] if target == "one-rank" else proc.pid
    os.kill(victim, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert all(not Path(f"/proc/{w}").exists() for w in workers)  # every rank ended
    assert "stopped by SIGTERM" in out and out.count("stopped by SIGTERM") == 1  # rank 0 alone reports
    ckpt = checkpoint.load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] >= 1 and 0 < ckpt["batch"] < 8  # stopped mid-epoch, at one step on every rank
    assert not list((tmp_path / "run").glob(".*.tmp-*"))
    until = ckpt["epoch"] + 2
    resumed = run_cli("train", "--config", str(cfg), "--resume", "--nproc", "2", "--set", f"train.epochs={until}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in records(tmp_path / "run")] == list(range(1, until + 1))


def test_a_batch_of_only_unreadable_files_on_one_rank_keeps_the_ranks_in_step(tmp_path):
    """on_bad_image: skip under DDP: the rank with nothing to train on still takes the step (zero gradients)."""
    data = tmp_path / "data"
    make_image_folder(data / "train", {"cat": 4, "dog": 4}, seed=1)
    make_image_folder(data / "val", {"cat": 2, "dog": 2}, seed=2)
    (data / "train" / "cat" / "000.png").write_bytes(UNDECODABLE_PNG)  # position 0 of a sequential order: rank 0
    sets = {"batch_size": 1, "sampler": "sequential", "on_bad_image": "skip"}
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(data, tmp_path / "run", data=sets, train={"epochs": 2}))
    proc = run_cli("train", "--config", str(cfg), "--nproc", "2", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]  # before the fix: a collective mismatch aborted rank 0
    recs = records(tmp_path / "run")
    assert [r["step"] for r in recs] == [4, 8]  # 4 steps per epoch on both ranks: 8 positions / 2 ranks / batch 1
    assert all(r["bad_images"] == 1 for r in recs)  # counted once, over both ranks
    assert all(np.isfinite(r["train_loss"]) for r in recs)  # rank 0's empty step added no NaN
    assert "loss nan" not in proc.stdout


def test_a_bad_image_in_one_ranks_shard_is_one_line_and_exit_2(tmp_path):
    """The rank that meets the file says so; the others' broken-connection tracebacks and torchrun's report stay out."""
    data = tmp_path / "data"
    make_image_folder(data / "train", {"cat": 4, "dog": 4}, seed=1)
    make_image_folder(data / "val", {"cat": 2, "dog": 2}, seed=2)
    (data / "train" / "cat" / "001.png").write_bytes(UNDECODABLE_PNG)  # position 1 of a sequential order: rank 1
    sets = {"batch_size": 1, "sampler": "sequential"}
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(data, tmp_path / "run", data=sets))
    proc = run_cli("train", "--config", str(cfg), "--nproc", "2", timeout=180)
    assert_user_error(proc, "cannot decode image", "001.png", "data.on_bad_image: skip")


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_kill_9_of_the_launcher_takes_its_ranks_with_it(tmp_path):
    data = tmp_path / "data"
    make_image_folder(data / "train", {"cat": 32, "dog": 32}, size=32, seed=3)
    make_image_folder(data / "val", {"cat": 4, "dog": 4}, size=32, seed=4)
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(data, tmp_path / "run", train={"epochs": 5000, "log_every": 1}))
    proc, workers = start_nproc_2(cfg, "epoch 2/5000")
    proc.kill()  # the launcher, with -9: it cannot pass anything on
    proc.wait()
    deadline = time.monotonic() + 30
    while any(running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if running(w)], "ranks outlived their launcher"
    written = (tmp_path / "run" / "last.pt").stat().st_mtime_ns
    time.sleep(1.5)
    assert (tmp_path / "run" / "last.pt").stat().st_mtime_ns == written  # nothing writes after the kill
