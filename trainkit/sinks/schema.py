"""The `log` section of a config: the console's progress, visdom, TensorBoard, metrics.csv and the report."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from trainkit.errors import check_count, key_error

ENV_NAME = re.compile(r"\w[\w.-]*")  # a visdom env is saved as ENV.json: no path, no hidden file


def check_port(port: int, key: str) -> None:
    if not 1 <= port <= 65535:
        raise key_error(key, f"a TCP port is from 1 to 65535, got {port}")


@dataclass
class VisdomConfig:
    enabled: bool = True
    server: str = "http://localhost"
    port: int = 8097
    env: str | None = None
    log_every: int = 50

    def _check(self, path: str) -> None:
        check_port(self.port, f"{path}.port")
        if self.env is not None and not ENV_NAME.fullmatch(self.env):
            raise key_error(
                f"{path}.env",
                f"use letters, digits, '_', '-' and '.' (not first) only: visdom saves an env as a file of its name; "
                f"got {self.env!r}",
            )
        check_count(self.log_every, f"{path}.log_every")


@dataclass
class TensorBoardConfig:
    enabled: bool = False
    dir: str | None = None  # default: <run_dir>/tb


@dataclass
class MlflowConfig:
    enabled: bool = False
    tracking_uri: str | None = None  # default: sqlite:///mlruns/mlflow.db, artifacts in mlruns/artifacts (no server)
    experiment: str | None = None  # default: the config's name (a sweep's: the study's)
    parent_run: str | None = None  # the MLflow run this one nests under: `trainkit sweep` sets it for its trials


@dataclass
class LogConfig:
    visdom: VisdomConfig = field(default_factory=VisdomConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    # off: no bar and no step lines, the epoch lines stay; quiet (train --quiet): only warnings and errors
    progress: Literal["auto", "bar", "lines", "off", "quiet"] = "auto"
    report: bool = True  # report.html and report/*.png at the end of a run (trainkit report)
    csv: bool = False  # metrics.csv beside metrics.jsonl: a row per epoch (the csv sink)
