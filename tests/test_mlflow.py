"""The MLflow sink, read back with `mlflow.tracking.MlflowClient`: params, metric histories equal to
metrics.jsonl, artifacts, `eval --mlflow`, and a sweep's trials nested under one parent run."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import run_cli, tiny_config, write_yaml
from mlflow.tracking import MlflowClient

from trainkit.text import flat_keys


@pytest.mark.slow
def test_a_run_in_mlflow_equals_its_files(tmp_path, tiny_data):
    uri = f"sqlite:///{tmp_path}/ml.db"
    log = {
        "visdom": {"enabled": False},
        "report": True,
        "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "e"},
    }
    cfg = write_yaml(
        tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run", log=log, train={"epochs": 3, "log_every": 1})
    )
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "run"
    held = json.loads((run_dir / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(held["run_id"])
    assert run.info.status == "FINISHED" and client.get_experiment(run.info.experiment_id).name == "e"
    resolved = flat_keys(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert run.data.params["optim.lr"] == str(resolved["optim.lr"]) and len(run.data.params) == len(resolved)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(r["epoch"], r[key]) for r in records], key
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "step_loss"))
    assert [s for s, _ in history] == [s["step"] for s in steps]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.jsonl", "status.json", "report.html", "report"} <= names, names
    assert "eval.json" not in names
    evaluated = run_cli("eval", "--ckpt", str(run_dir / "best.pt"), "--mlflow")
    assert evaluated.returncode == 0 and "logged report.html, report, eval.json" in evaluated.stdout, evaluated.stderr
    assert "eval.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # the artifacts lie beside the sqlite file, not in ./mlruns of the folder the command ran in
    assert list((tmp_path / "artifacts").glob(f"**/{held['run_id']}/artifacts/eval.json")), run.info.artifact_uri


def test_a_sweeps_trials_are_nested_runs_of_one_parent(tmp_path, tiny_data):
    uri = f"sqlite:///{tmp_path}/ml.db"
    log = {"visdom": {"enabled": False}, "report": False, "mlflow": {"enabled": True, "tracking_uri": uri}}
    base = write_yaml(tmp_path / "b.yaml", tiny_config(tiny_data, tmp_path / "runs" / "tiny", log=log))
    space = write_yaml(tmp_path / "s.yaml", {"optim.lr": {"choice": [0.1, 0.05]}})
    proc = run_cli("sweep", "--config", str(base), "--space", str(space), "--trials", "2", "--study", "nest",
                   "--pruner", "none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("nest")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("trainkit.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["trial-0", "trial-1"]
    assert sorted(float(r.data.params["optim.lr"]) for r in children) == [0.05, 0.1]
    best = yaml.safe_load((tmp_path / "runs" / "nest" / "best.yaml").read_text())
    assert best["log"]["mlflow"]["parent_run"] is None  # best.yaml is a run of its own
