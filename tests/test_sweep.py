"""`trainkit sweep` through the real CLI: trials as real runs in a journal-file study, --jobs, pruning, a sweep
killed (SIGKILL) or interrupted (SIGINT) and run again, and its bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, assert_user_error, run_cli, tiny_config, write_yaml

from trainkit.study.sweep import JOURNAL

SPACE = {"optim.lr": {"loguniform": [1.0e-3, 0.3]}, "optim.type": {"choice": ["SGD", "AdamW"]}}


def setup(tmp_path: Path, tiny_data: Path, space: dict = SPACE, **train) -> tuple[Path, Path]:
    cfg = tiny_config(tiny_data, tmp_path / "runs" / "tiny", train={"epochs": 2, "log_every": 2, **train})
    return write_yaml(tmp_path / "base.yaml", cfg), write_yaml(tmp_path / "space.yaml", space)


def sweep(base: Path, space: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run_cli("sweep", "--config", str(base), "--space", str(space), *args, **kw)


def study_of(folder: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL)))
    return optuna.load_study(study_name=name, storage=storage)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainkit", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def wait_line(proc: subprocess.Popen, *fragments: str) -> list[str]:
    """Read until a line holds every fragment (in order: the first fragment, then the next, ...)."""
    seen, todo = [], list(fragments)
    for line in proc.stdout:
        seen.append(line)
        if todo[0] in line:
            todo.pop(0)
            if not todo:
                return seen
    raise AssertionError(f"never saw {todo}: {''.join(seen)[-2500:]}")


@pytest.mark.slow
def test_a_sweep_runs_trials_as_runs_and_ends_with_a_table_best_yaml_and_pictures(tmp_path, tiny_data):
    base, space = setup(tmp_path, tiny_data)
    proc = sweep(base, space, "--trials", "4", "--pruner", "none", "--study", "s1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "runs" / "s1"
    study = study_of(folder, "s1")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    for t in trials:  # each trial is a run whose resolved config holds its params
        run = Path(t.user_attrs["run_dir"])
        assert run == folder / f"trial-{t.number}"
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == t.params["optim.lr"] and cfg["optim"]["type"] == t.params["optim.type"]
        if cfg["optim"]["type"] == "AdamW":
            assert "momentum" not in cfg["optim"]  # dropped as --set drops what the new class does not take
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
        assert t.value == max(r["val_acc"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()))
    assert "trial  state" in proc.stdout and proc.stdout.count("complete") >= 4
    best = study.best_trial
    assert f"best: trial {best.number}" in proc.stdout
    best_yaml = folder / "best.yaml"
    again = run_cli(
        "train", "--config", str(best_yaml), "--set", "train.epochs=1", "--run-dir", str(tmp_path / "again")
    )
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(best_yaml.read_text())["optim"]["lr"] == best.params["optim.lr"]
    page = (folder / "sweep.html").read_text()
    assert page.count("data:image/png;base64,") == 3, page[-2000:]  # history, intermediate values, importances
    assert json.loads((folder / "study.json").read_text())["space"]["optim.lr"] == ["loguniform", [0.001, 0.3]]
    # the trials are runs like any other: grouped under their study, and eval works on them
    table = run_cli("runs", str(tmp_path / "runs"))
    assert "s1/" in table.stdout and "study: 4 trials (4 finished)" in table.stdout, table.stdout
    assert "  trial-3" in table.stdout and "optim.lr" in table.stdout.splitlines()[0]
    evaluated = run_cli("eval", "--ckpt", str(folder / "trial-0" / "best.pt"))
    assert evaluated.returncode == 0, evaluated.stderr
    # the same command again: the study holds its 4 trials already, and nothing is trained
    rerun = sweep(base, space, "--trials", "4", "--pruner", "none", "--study", "s1")
    assert rerun.returncode == 0 and "trial 4:" not in rerun.stdout and len(study_of(folder, "s1").trials) == 4


@pytest.mark.slow
def test_two_jobs_split_the_trials_and_the_median_pruner_stops_hopeless_ones(tmp_path, tiny_data):
    """The median pruner judges a trial only once 4 trials have completed. Each worker's seeded stream draws
    0.1 then 1e-7 first (worker 1: then 1e-7 again), so in one command of 8 trials whether a 1e-7 trial reached
    its second epoch after the 4th completion depended on the two workers' timing (CI: once none was pruned).
    Here the first 4 trials complete in one command (at most 2 of them 1e-7: the median at epoch 2 is at
    least 0.75, against 1e-7's 0.5); the same command with 8 draws the same streams again, and at least one
    worker runs 2 of the 4 new trials: its second, 1e-7, is pruned whatever the timing."""
    space = {"optim.lr": {"choice": [0.2, 0.1, 0.05, 1.0e-7]}}  # 1e-7 learns nothing: the pruner stops those
    base, space_file = setup(tmp_path, tiny_data, space, epochs=4)
    for trials in ("4", "8"):
        proc = sweep(base, space_file, "--trials", trials, "--jobs", "2", "--sampler", "random", "--study", "s2")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = tmp_path / "runs" / "s2"
    trials = study_of(folder, "s2").get_trials()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 8 and len(trials) <= 10  # a worker may start one more as the other finishes
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == len(dirs)  # no trial run twice
    # --jobs 2 splits the trials: 4 worker processes in the two commands, and both of a command ran trials in
    # one of them at least (a worker that starts late may find its command's 4 trials taken)
    assert len({t.user_attrs["worker"][1] for t in trials}) >= 3
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.params["optim.lr"] == 1.0e-7 for t in pruned), [(t.params, t.state) for t in trials]
    for t in pruned:  # a pruned trial is a stopped run, marked as pruned, that stopped before its last epoch
        status = json.loads((Path(t.user_attrs["run_dir"]) / "status.json").read_text())
        assert status["state"] == "stopped" and status["reason"] == "pruned" and status["epoch"] < 4
    table = run_cli("runs", str(folder), "--format", "json")
    states = {r["run"]: r["state"] for r in json.loads(table.stdout)}
    assert sum(s == "pruned" for s in states.values()) == len(pruned)


@pytest.mark.slow
def test_a_killed_sweep_continues_and_its_killed_trial_resumes_from_its_last_pt(tmp_path, tiny_data):
    base, space = setup(tmp_path, tiny_data, epochs=60, log_every=6)
    args = ("sweep", "--config", str(base), "--space", str(space), "--trials", "2", "--pruner", "none", "--study", "k")
    proc = start(*args)
    try:
        wait_line(proc, "trial 0:", "epoch 3/60 |")  # trial 0 has checkpoints
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    folder = tmp_path / "runs" / "k"
    (t0,) = study_of(folder, "k").get_trials()
    assert t0.state.name == "RUNNING"  # the kill left it so; its process is gone
    done_before = len((folder / "trial-0" / "metrics.jsonl").read_text().splitlines())
    again = run_cli(*args, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "trial 0: its process is gone; queued again" in again.stdout
    assert f"(a retry of trial 0, from {folder / 'trial-0' / 'last.pt'})" in again.stdout
    trials = study_of(folder, "k").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["run_dir"] == str(folder / "trial-0")  # the retry went on in the same folder
    epochs = [json.loads(line)["epoch"] for line in (folder / "trial-0" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 61)) and done_before >= 2  # each epoch once: resumed, not started again
    assert "retry of 0" in again.stdout


@pytest.mark.slow
def test_sigint_stops_both_jobs_at_a_checkpoint_and_the_same_command_finishes(tmp_path, tiny_data):
    base, space = setup(tmp_path, tiny_data, epochs=60, log_every=6)
    args = ("sweep", "--config", str(base), "--space", str(space), "--trials", "3", "--jobs", "2", "--pruner",
            "none", "--study", "i")  # fmt: skip
    proc = start(*args)
    seen = ""
    while not ("trial 0:" in seen and "trial 1:" in seen):
        line = proc.stdout.readline()
        assert line, seen[-3000:]
        seen += line
    folder = tmp_path / "runs" / "i"
    deadline = time.monotonic() + 120
    while not all((folder / f"trial-{n}" / "last.pt").is_file() for n in (0, 1)):  # the workers are quiet
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # both trials are in their epochs
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out[-3000:]
    states = [t.state.name for t in study_of(tmp_path / "runs" / "i", "i").get_trials()]
    assert "RUNNING" in states and "COMPLETE" not in states, states
    again = run_cli(*args, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials = study_of(tmp_path / "runs" / "i", "i").get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3
    assert "queued again" in again.stdout


@pytest.mark.slow
def test_bad_spaces_storages_and_studies_are_one_line(tmp_path, tiny_data):
    base, _ = setup(tmp_path, tiny_data)

    def space(entry: dict) -> Path:
        return write_yaml(tmp_path / "bad.yaml", entry)

    def bad(entry: dict, *fragments: str) -> None:
        assert_user_error(sweep(base, space(entry), "--trials", "2"), *fragments)

    bad({"optim.lrr": {"uniform": [0.1, 0.2]}}, "bad.yaml:1", "optim.lrr=0.1", "lrr")
    bad({"optim.lr": {"uniform": [0.2, 0.1]}}, "optim.lr", "empty range")
    bad({"optim.lr": {"lognormal": [0.1, 0.2]}}, "unknown distribution 'lognormal'", "did you mean 'loguniform'")
    bad({"data.batch_size": {"choice": [4, 0]}}, "data.batch_size=0 makes an invalid config")
    bad({"optim.lr": {"loguniform": [0.0, 0.1]}}, "needs low > 0")
    bad({"optim.lr": {"choice": []}}, "an empty choice")
    assert_user_error(sweep(base, space(SPACE), "--trials", "2", "--storage", "postgresql://trainkit@127.0.0.1:9/none"),
                      "--storage postgresql://trainkit@127.0.0.1:9/none", "cannot open it")  # fmt: skip
    assert_user_error(sweep(base, space(SPACE), "--trials", "0"), "--trials")
    assert_user_error(sweep(base, space(SPACE), "--trials", "2", "--sampler", "grid"), "--sampler grid", "optim.lr")
    ok = sweep(base, space({"optim.lr": {"choice": [0.1]}}), "--trials", "1", "--study", "taken")
    assert ok.returncode == 0, ok.stderr
    assert_user_error(sweep(base, space(SPACE), "--trials", "2", "--study", "taken"), "--study taken", "another space")
    assert not (tmp_path / "runs" / "taken" / "trial-1").exists()
