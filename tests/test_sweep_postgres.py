"""Many machines through an existing engine: two `trainkit sweep` processes on one study in a real PostgreSQL
server (Debian's, installed by .ci/run), a throwaway cluster in a temporary folder on a loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, free_port, tiny_config, write_yaml


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    assert found, f"{name} not found: install Debian's postgresql (.ci/run does)"
    return found


def as_postgres(cmd: list[str]) -> list[str]:
    """The server refuses to run as root: run its tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres():
    folder = Path(tempfile.mkdtemp(prefix="trainkit-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    subprocess.run(as_postgres([pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]), check=True,
                   capture_output=True)  # fmt: skip
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=50 -c fsync=off"
    subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start"]),
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_sweep_processes_split_one_study_in_postgresql(tmp_path, tiny_data, postgres):
    base = write_yaml(tmp_path / "base.yaml", tiny_config(tiny_data, tmp_path / "runs" / "tiny", train={"epochs": 3}))
    space = write_yaml(tmp_path / "space.yaml", {"optim.lr": {"loguniform": [1.0e-3, 0.3]}})
    args = [sys.executable, "-m", "trainkit", "sweep", "--config", str(base), "--space", str(space), "--trials", "6",
            "--study", "pg", "--storage", postgres, "--pruner", "none"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    time.sleep(0.2)  # as a second machine would, a little later: both create the study's tables at once
    second = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    outs = [p.communicate(timeout=900)[0] for p in (first, second)]
    said = [[ln for ln in o.splitlines() if "rror" in ln or "Traceback" in ln][-5:] for o in outs]
    assert [first.returncode, second.returncode] == [0, 0], said
    study = optuna.load_study(study_name="pg", storage=postgres)
    trials = study.get_trials()
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(finished) >= 6 and len(trials) <= 7, [(t.number, t.state) for t in trials]  # one more at most
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == len(dirs)  # no trial run twice
    pids = {t.user_attrs["worker"][1] for t in trials}
    assert pids == {first.pid, second.pid}, pids  # both processes ran trials
    for t in finished:  # each a real run in the shared folder
        assert (Path(t.user_attrs["run_dir"]) / "best.pt").is_file()
    for out, p in zip(outs, (first, second)):
        mine = [t.number for t in trials if t.user_attrs["worker"][1] == p.pid]
        assert all(f"trial {n}:" in out for n in mine)
