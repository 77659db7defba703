"""`log.mlflow`: the run in MLflow, through `mlflow.tracking.MlflowClient` (mlflow-skinny, the `mlflow` extra).

The flattened resolved config as params; each epoch's metrics.jsonl values at step = epoch, and the train
loss every `train.log_every` steps as `step_loss` at the global step; at the end the run's config.yaml,
status.json and metrics.jsonl as artifacts, and its MLflow status from status.json (finished, failed, or
killed for a stopped run). `finish` adds report.html, report/, eval.json and test.json once they are written.
The MLflow run's id is kept in the run directory's mlflow.json: a resumed run goes on in the same MLflow run.

The default store is `sqlite:///mlruns/mlflow.db`, artifacts in mlruns/artifacts: no server. (MLflow 3
refuses its old ./mlruns file store unless MLFLOW_ALLOW_FILE_STORE is set.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainkit.sinks.base import RunInfo, SinkContext, SinkKind, StepLosses
from trainkit.sinks.schema import LogConfig, MlflowConfig
from trainkit.store.files import write_text_atomic
from trainkit.store.status import read_status
from trainkit.text import first_line, flat_keys

ID_FILE = "mlflow.json"
DEFAULT_ROOT = "mlruns"
STATES = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}  # status.json -> MLflow's
END_FILES = ("report.html", "report", "eval.json", "test.json")  # what `finish` logs, where it exists


def tracking_uri(cfg: MlflowConfig) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    root = Path(DEFAULT_ROOT).resolve()  # absolute: `trainkit eval --mlflow` from elsewhere finds the same store
    root.mkdir(exist_ok=True)
    return f"sqlite:///{root}/mlflow.db"


def client(cfg: MlflowConfig) -> Any:
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the sqlite store's table creation, once
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=tracking_uri(cfg))


def experiment_id(c: Any, cfg: MlflowConfig, name: str) -> str:
    name = cfg.experiment or name
    found = c.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(c.create_experiment(name, artifact_location=artifact_root(tracking_uri(cfg))))


def artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store lie beside its file; MLflow's own default is ./mlruns of whatever folder the
    process runs in. A server's store (http://, postgresql://) chooses its own: None."""
    if not uri.startswith("sqlite:///"):
        return None
    return str(Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts")


def parent_run(log: LogConfig, experiment: str, name: str) -> str:
    """A parent run for a sweep's trials; returns its id (its status stays RUNNING until `end_parent`)."""
    c = client(log.mlflow)
    run = c.create_run(experiment_id(c, log.mlflow, experiment), run_name=name, tags={"trainkit.kind": "sweep"})
    return str(run.info.run_id)


def end_parent(log: LogConfig, run_id: str) -> None:
    client(log.mlflow).set_terminated(run_id, "FINISHED")


class Mlflow(StepLosses):
    def __init__(self, ctx: SinkContext) -> None:
        super().__init__(ctx.log_every)
        self.cfg, self.run_dir, self.say = ctx.log.mlflow, ctx.run_dir, ctx.say
        self.client: Any = None
        self.run_id = ""

    def start(self, info: RunInfo) -> None:
        super().start(info)
        try:
            self.client = client(self.cfg)
            held = _held_id(self.run_dir) if info.resumed else None
            if held is not None:
                self.run_id = held
                self.client.update_run(held, status="RUNNING")
            else:
                tags = {"mlflow.parentRunId": self.cfg.parent_run} if self.cfg.parent_run else {}
                run = self.client.create_run(
                    experiment_id(self.client, self.cfg, info.name), run_name=info.run_dir.name, tags=tags
                )
                self.run_id = run.info.run_id
                self._params(info.config_text)
        except Exception as exc:  # noqa: BLE001 - a tracking server that is down does not stop the run
            self.say(f"warning: log.mlflow: {first_line(exc)}; the run goes on without MLflow")
            self.client = None

    def _params(self, config_text: str) -> None:
        from mlflow.entities import Param

        flat = flat_keys(yaml.safe_load(config_text) or {})
        params = [Param(k, (json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:6000]) for k, v in flat.items()]
        for i in range(0, len(params), 100):  # MLflow takes up to 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def step_loss(self, epoch: int, global_step: int, loss: float, stats: dict[str, Any]) -> None:
        if self.client is not None:
            self._metrics({"step_loss": loss}, global_step)

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        if self.client is not None:
            values = {k: v for k, v in record.items() if k not in ("epoch", "step") and _number(v)}
            self._metrics(values, int(record["epoch"]))

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])
        except Exception as exc:  # noqa: BLE001 - said once; the run goes on
            self.say(f"warning: log.mlflow: {first_line(exc)}; the run goes on without MLflow")
            self.client = None

    def close(self) -> None:
        if self.client is None:
            return
        status = STATES.get(read_status(self.run_dir).get("state", "failed"), "FAILED")
        try:
            if self.run_dir.is_dir():  # the run saved a checkpoint: its files exist
                write_text_atomic(
                    self.run_dir / ID_FILE,
                    json.dumps({"run_id": self.run_id, "tracking_uri": tracking_uri(self.cfg)}) + "\n",
                )
                for name in ("config.yaml", "status.json", "metrics.jsonl"):
                    if (self.run_dir / name).is_file():
                        self.client.log_artifact(self.run_id, str(self.run_dir / name))
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:  # noqa: BLE001
            self.say(f"warning: log.mlflow: {first_line(exc)}")
        self.client = None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _held_id(run_dir: Path) -> str | None:
    try:
        return str(json.loads((run_dir / ID_FILE).read_text(encoding="utf-8"))["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def after_run(log: LogConfig, run_dir: Path) -> None:
    """The files written after the loop (report, eval.json, test.json) as the MLflow run's artifacts."""
    if log.mlflow.enabled and _held_id(run_dir) is not None:
        log_files(run_dir)


def log_files(run_dir: Path) -> str:
    """Log report.html, report/, eval.json and test.json, where they exist, to the MLflow run that the run
    directory's mlflow.json names; returns what was done, in words."""
    from trainkit.errors import RunDirError

    try:
        held = json.loads((run_dir / ID_FILE).read_text(encoding="utf-8"))
        run_id, uri = str(held["run_id"]), str(held["tracking_uri"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RunDirError(f"{run_dir}: no readable {ID_FILE}; it is written by a run with log.mlflow.enabled") from None
    c = client(MlflowConfig(enabled=True, tracking_uri=uri))
    logged = []
    for name in END_FILES:
        path = run_dir / name
        if path.is_dir():
            c.log_artifacts(run_id, str(path), artifact_path=name)
        elif path.is_file():
            c.log_artifact(run_id, str(path))
        else:
            continue
        logged.append(name)
    return f"logged {', '.join(logged) or 'nothing'} to MLflow run {run_id} ({uri})"


SINK = SinkKind(make=lambda c: Mlflow(c) if c.log.mlflow.enabled else None, files=(ID_FILE,), finish=after_run)
