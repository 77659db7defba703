"""Beyond one launcher: twenty `--nproc 2` starts in a row, and two torchrun "nodes" meeting at a c10d
rendezvous on loopback (a file of its own, so that the test processes share the distributed tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, free_port, make_image_folder, run_cli, tiny_config, write_yaml

from trainkit.store import checkpoint

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1500)  # minutes of CPU: slower when the other test process trains too
def test_twenty_starts_of_nproc_2_on_fresh_run_directories_never_fail(tmp_path):
    """Only rank 0 checks and prepares the run directory; a rank that probed it beside rank 0 once found
    `run_dir ... is a file` (a mkdir/rmdir probe seen half-way)."""
    make_image_folder(tmp_path / "data" / "train", {"cat": 4, "dog": 4}, seed=1)
    make_image_folder(tmp_path / "data" / "val", {"cat": 2, "dog": 2}, seed=2)
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tmp_path / "data", tmp_path / "unused", train={"epochs": 1}))
    for i in range(20):
        run_dir = tmp_path / "runs" / f"r{i}" / "deeper"
        proc = run_cli("train", "--config", str(cfg), "--nproc", "2", "--run-dir", str(run_dir), timeout=180)
        assert proc.returncode == 0, (i, proc.stderr[-3000:])
        assert (run_dir / "last.pt").is_file()


def launch_node(cfg: Path, port: int, run_dir: Path, *extra: str) -> subprocess.Popen:
    """One "node" of two: torchrun with one process, meeting the other at a c10d rendezvous on loopback."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "trainkit-test",
            "--local_addr", "127.0.0.1", "-m", "trainkit", "train", "--config", str(cfg), "--run-dir", str(run_dir),
            *extra,
        ],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nodes")
    make_image_folder(root / "data" / "train", {"cat": 24, "dog": 16}, size=32, seed=1)
    make_image_folder(root / "data" / "val", {"cat": 4, "dog": 4}, size=32, seed=2)
    aug = {"batch_size": 4, "transforms": {"train": [{"RandomCrop": {"size": 32, "padding": 2}}, "ToTensor"]}}
    cfg = write_yaml(root / "c.yaml", tiny_config(root / "data", root / "single", data=aug, train={"epochs": 2}))
    return {"root": root, "cfg": cfg}


def test_two_nodes_agree_with_nproc_2_and_only_global_rank_0_writes(two_nodes):
    root, cfg = two_nodes["root"], two_nodes["cfg"]
    local = run_cli("train", "--config", str(cfg), "--nproc", "2", "--run-dir", str(root / "local"), timeout=240)
    assert local.returncode == 0, local.stderr[-3000:]
    port = free_port()
    nodes = [launch_node(cfg, port, root / f"node{i}") for i in range(2)]
    for node in nodes:
        out, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    written = [p for p in (root / "node0", root / "node1") if p.exists()]
    assert len(written) == 1, written  # the node of global rank 0 wrote; the other made not even its folder
    a = torch.load(root / "local" / "last.pt", weights_only=True)["model"]
    b = torch.load(written[0] / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


@pytest.mark.parametrize("victim", [0, 1])
def test_sigterm_to_either_node_stops_both_with_a_resumable_checkpoint(two_nodes, victim):
    root, cfg = two_nodes["root"], two_nodes["cfg"]
    run_dir = root / f"stopped{victim}"
    port = free_port()
    nodes = [launch_node(cfg, port, run_dir, "--set", "train.epochs=500", "--set", "train.log_every=1")]
    nodes.append(launch_node(cfg, port, run_dir, "--set", "train.epochs=500", "--set", "train.log_every=1"))
    deadline = time.monotonic() + 180
    while not (run_dir / "last.pt").is_file():  # a first epoch done: both ranks are training
        assert time.monotonic() < deadline and all(n.poll() is None for n in nodes)
        time.sleep(0.2)
    nodes[victim].send_signal(signal.SIGTERM)
    for node in nodes:
        node.communicate(timeout=120)  # both end: none is left waiting on the other
    ckpt = checkpoint.load_checkpoint(run_dir / "last.pt", resume=True)
    until = ckpt["epoch"] + 1
    resumed = run_cli("train", "--resume", str(run_dir / "last.pt"), "--nproc", "2", "--set", f"train.epochs={until}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoint.load_checkpoint(run_dir / "last.pt")["epoch"] == until
