"""`trainkit sweep`: an Optuna study whose trials are trainkit runs in `<runs>/<study>/trial-<n>/`.

The study lives in an Optuna journal file in the study's folder (no server; processes on one machine share
it), or in Optuna's RDB storage (`--storage postgresql://...`), where workers on many machines share one
study and a dead worker's trial is failed by Optuna's heartbeat and retried by its
`RetryHeartbeatStaleTrialCallback`. On one machine trainkit also fails and retries, at once, a running
trial whose process is gone (killed with SIGKILL, or stopped by SIGINT/SIGTERM). A retried trial keeps its
run directory and resumes from its last.pt, so no finished epoch is trained twice.

Each worker runs trials one at a time, in its own process, until the study holds N finished (complete or
pruned) trials; `--jobs K` starts K workers. The monitored metric is reported each epoch, and a pruned
trial is a run stopped with the reason `pruned`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainkit.errors import ConfigError, RunDirError, TrainingError
from trainkit.run import stopping
from trainkit.run.config import Config
from trainkit.store.files import process_alive, write_text_atomic
from trainkit.study.space import Param, grid, setting
from trainkit.text import first_line, fmt_metric

HOST = socket.gethostname()
JOURNAL = "journal.log"
MAX_RETRY = 3  # a trial is retried this often after its worker died, then left failed


@dataclass
class Sweep:
    base: str  # the base config file
    overrides: list[str]  # --set items, applied before the space's
    space: list[Param]
    trials: int
    study: str
    folder: Path  # <runs>/<study>
    storage: str | None  # an RDB URL, or None: the journal file in `folder`
    jobs: int
    pruner: str
    sampler: str
    cfg: Config  # the base config (with --set)
    trial_overrides: list[str] = field(default_factory=list)  # what each trial adds: threads, progress, MLflow parent

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.cfg.train.monitor_mode == "max" else "minimize"

    @property
    def where(self) -> str:
        return shown_url(self.storage) if self.storage else str(self.folder / JOURNAL)

    def canonical_space(self) -> str:
        return json.dumps({p.key: p.canonical() for p in self.space}, sort_keys=True)


def shown_url(url: str) -> str:
    """A storage URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy reads: shown as given
        return url


def open_storage(sw: Sweep) -> Any:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if sw.storage is None:
        sw.folder.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(sw.folder / JOURNAL)))
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if sw.storage.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    from sqlalchemy.exc import IntegrityError

    for attempt in range(5):
        try:
            return RDBStorage(
                sw.storage,
                engine_kwargs=kwargs,
                heartbeat_interval=10,
                grace_period=30,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
        except IntegrityError:  # another worker creates Optuna's tables at this moment: open them once it has
            time.sleep(0.5 * (attempt + 1))
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's and the driver's errors: one line with the URL
            raise ConfigError(f"--storage {shown_url(sw.storage)}: cannot open it: {first_line(exc)}") from None
    raise ConfigError(f"--storage {shown_url(sw.storage)}: cannot open it: its tables were being created all along")


def _sampler(sw: Sweep, worker: int) -> Any:
    import optuna

    seed = (sw.cfg.seed + worker) % 2**32  # each worker its own stream: two workers do not draw the same trials
    if sw.sampler == "grid":
        return optuna.samplers.GridSampler(grid(sw.space), seed=seed)
    if sw.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(sw: Sweep) -> Any:
    import optuna

    if sw.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if sw.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=sw.cfg.train.epochs)
    return optuna.pruners.NopPruner()


def open_study(sw: Sweep, worker: int = 0, create: bool = False) -> Any:
    """The study (created when `create`), after checking that it was made with this space and metric."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trainkit says each trial's end itself
    storage = open_storage(sw)
    try:
        study = optuna.create_study(
            study_name=sw.study,
            storage=storage,
            sampler=_sampler(sw, worker),
            pruner=_pruner(sw),
            direction=sw.direction,
            load_if_exists=True,
        )
    except ValueError as exc:  # another direction than the stored study's
        raise ConfigError(f"--study {sw.study} in {sw.where}: {first_line(exc)}; give another --study") from None
    except Exception as exc:  # noqa: BLE001 - the database went away between open and use
        raise ConfigError(f"--storage {sw.where}: {first_line(exc)}") from None
    held = study.user_attrs.get("space")
    if held is None and create:
        try:
            study.set_user_attr("space", sw.canonical_space())
            study.set_user_attr("monitor", sw.cfg.train.monitor)
        except Exception:  # noqa: BLE001 - another process on the same study set them at this moment (RDB)
            held = study.user_attrs.get("space")
    if held is not None and held != sw.canonical_space():
        theirs = ", ".join(sorted(json.loads(held)))
        raise ConfigError(
            f"--study {sw.study} in {sw.where} was made with another space ({theirs}); give another --study, "
            "or run it with its own space file"
        )
    return study


def write_marker(sw: Sweep) -> None:
    """study.json in the study's folder: what `trainkit runs` groups the trials by, and what made them."""
    from trainkit.study.runs import STUDY_FILE

    marker = {"study": sw.study, "storage": sw.where, "base": sw.base, "space": json.loads(sw.canonical_space()),
              "trials": sw.trials, "monitor": sw.cfg.train.monitor, "direction": sw.direction}  # fmt: skip
    write_text_atomic(sw.folder / STUDY_FILE, json.dumps(marker, indent=1) + "\n")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # not ours to judge
    return process_alive(pid)


def recover(study: Any) -> list[int]:
    """Fail the running trials of this machine whose process is gone, and queue each again (same params, same
    run directory) with Optuna's retry callback; returns their numbers."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid, number = (t.user_attrs.get("worker") or [None, None, None])[:3]
        if host != HOST or number != t.number or pid == os.getpid() or _alive(pid):
            continue  # another machine's (Optuna's heartbeat judges it), not claimed yet, ours, or alive
        if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):  # we, not another worker
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, study._storage.get_trial(t._trial_id))
            out.append(t.number)
    return out


def counts(study: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _trial_config(sw: Sweep, trial: Any) -> tuple[Config, dict[str, Any], str]:
    """The trial's config (the base, --set, its params, its folder), its params and its folder."""
    from trainkit.run.config import load_config

    run_dir = trial.user_attrs.get("run_dir") or str(sw.folder / f"trial-{trial.number}")
    # who runs it: a retry copies its failed trial's attrs, so the trial's own number says they are its own
    trial.set_user_attr("worker", [HOST, os.getpid(), trial.number])
    trial.set_user_attr("run_dir", run_dir)
    params = {p.key: p.suggest(trial) for p in sw.space}
    items = [*sw.overrides, *(setting(k, v) for k, v in params.items()), f"run_dir={run_dir}", *sw.trial_overrides]
    try:
        cfg = load_config(sw.base, items)
    except ConfigError as exc:
        shown = " ".join(setting(k, v) for k, v in params.items())
        raise ConfigError(f"trial {trial.number} ({shown}): {first_line(exc)}") from None
    return cfg, params, run_dir


def _run_trial(sw: Sweep, trial: Any) -> float:
    """One trial: a trainkit run in its own folder (resumed from its last.pt when a retry finds one)."""
    import optuna

    from trainkit.run import build, distributed, loop, resuming

    cfg, params, run_dir = _trial_config(sw, trial)
    notes: list[str] = []
    point = resuming.resume_point(cfg, "", None, notes)
    retried = trial.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")  # set by the retry
    said = f" (a retry of trial {retried}, from {point.path})" if retried is not None and point.path else ""
    print(f"trial {trial.number}: {' '.join(setting(k, v) for k, v in params.items())} -> {run_dir}{said}", flush=True)
    if point.done:  # it had finished when its worker died: its result stands
        from trainkit.study.runs import read_row

        return _value(read_row(Path(run_dir), Path(run_dir)).best)

    def report(record: dict[str, Any]) -> str | None:
        value = record.get(cfg.train.monitor)
        if value is None:
            return None
        trial.report(float(value), int(record["epoch"]))
        last = int(record["epoch"]) >= cfg.train.epochs  # a trial that has run its course is not pruned
        return stopping.PRUNED if not last and trial.should_prune() else None

    r = None
    try:
        r = build.build_run(cfg, resume=point.path, overwrite=False, ckpt=point.ckpt)
        r.epoch_hook = report
        loop.fit(r)
    except (TrainingError, RunDirError) as exc:  # a failed trial (or its folder in use), in one line; the sweep goes on
        if r is not None and r.state.stop_reason == stopping.NAN:  # a diverged trial: as hopeless as a pruned one
            trial.set_user_attr("stopped", stopping.NAN)
            raise optuna.TrialPruned(f"the loss became NaN: {first_line(exc)}") from None
        print(f"trial {trial.number} failed: {first_line(exc)}", file=sys.stderr, flush=True)
        trial.set_user_attr("error", first_line(exc))
        return float("nan")
    finally:
        distributed.close()
        if r is not None and r.lock is not None:
            r.lock.release()
    if r.state.stop_reason == stopping.PRUNED:
        print(f"trial {trial.number}: pruned at epoch {r.state.epoch}", flush=True)
        raise optuna.TrialPruned(f"pruned at epoch {r.state.epoch}")
    if cfg.log.report:
        from trainkit.trained.report import write_report

        write_report(r.run_dir, trust_code=True)
    from trainkit.sinks import table as sinks_table

    sinks_table.finish_run(cfg.log, r.run_dir)
    best = fmt_metric(cfg.train.monitor, r.state.best)
    print(f"trial {trial.number}: best {cfg.train.monitor} {best} at epoch {r.state.best_epoch}", flush=True)
    return _value(r.state.best)


def mlflow_parent(sw: Sweep, study: Any) -> None:
    """log.mlflow: the study's parent MLflow run (made once, its id kept in the study), which each trial nests under."""
    if not sw.cfg.log.mlflow.enabled:
        return
    from trainkit.sinks import mlflow

    experiment = sw.cfg.log.mlflow.experiment or sw.study
    run_id = study.user_attrs.get("mlflow_parent")
    if run_id is None:
        run_id = mlflow.parent_run(sw.cfg.log, experiment, sw.study)
        study.set_user_attr("mlflow_parent", run_id)
    sw.trial_overrides += [f"log.mlflow.parent_run={run_id}", f"log.mlflow.experiment={json.dumps(experiment)}"]


def _value(best: float | None) -> float:
    if best is None:  # no epoch evaluated the monitored metric: a failed trial for Optuna
        return float("nan")
    return float(best)


def work(sw: Sweep, worker: int = 0) -> None:
    """Run trials until the study holds `sw.trials` finished ones (the others' running trials counted)."""
    from optuna.trial import TrialState

    study = open_study(sw, worker)
    while True:
        for number in recover(study):
            print(f"trial {number}: its process is gone; queued again, to resume from its last.pt", flush=True)
        n = counts(study)
        done = n.get("COMPLETE", 0) + n.get("PRUNED", 0)
        if done >= sw.trials or (done + n.get("RUNNING", 0) >= sw.trials and not n.get("WAITING", 0)):
            return
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
        if len(failed) >= max(sw.trials, 3) * (MAX_RETRY + 1):
            raise TrainingError(
                f"study {sw.study}: {len(failed)} trials failed; see their run directories in {sw.folder}"
            )
        study.optimize(lambda trial: _run_trial(sw, trial), n_trials=1)
