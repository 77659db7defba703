"""Live plots on a visdom server: the only module that imports visdom.

`VisdomSink` is a `sinks.Sink`. Every
update is put on a bounded queue and sent by one background thread, so a slow
or missing server never blocks or breaks training: when the queue is full the
update is dropped (and counted). When the server cannot be reached at start,
one warning says so and how to start it, and the sink does nothing more.

Window ids are fixed names (`loss`, `acc`, ...), so a resumed run appends to
the same curves instead of opening new windows.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trainkit.errors import TrainingError
from trainkit.schema import VisdomConfig
from trainkit.sinks import RunInfo, Sink

WINDOWS = {
    "loss": "loss",
    "acc": "top-1 accuracy",
    "lr": "learning rate",
    "images_per_s": "images/s",
    "step_loss": "train loss per step",
    "confusion": "confusion matrix",
    "samples": "training samples",
    "config": "config",
}
EPOCH_TRACES = {
    "loss": ("train_loss", "val_loss"),
    "acc": ("train_acc", "val_acc"),
    "lr": ("lr",),
    "images_per_s": ("images_per_s",),
}


def connect(server: str, port: int, env: str) -> tuple[Any | None, str]:
    """(a visdom client, "") or (None, why not: no server, or one that refused the login).

    Credentials come from VISDOM_USERNAME/PASSWORD."""
    import visdom

    logging.getLogger("visdom").setLevel(logging.ERROR)
    user = os.environ.get("VISDOM_USERNAME") or None
    where = f"{server}:{port}"
    try:
        make: Any = visdom.Visdom  # its stub (__init__.pyi) lacks the username and password it takes
        client = make(
            server=server,
            port=port,
            env=env,
            use_incoming_socket=False,
            raise_exceptions=True,  # failures surface as exceptions the sink's thread counts, never as prints
            username=user,
            password=os.environ.get("VISDOM_PASSWORD") if user else None,
        )
        if client.check_connection():
            return client, ""
    except RuntimeError:  # visdom's "Authentication failed"
        return None, (
            f"the visdom server at {where} refused the login of VISDOM_USERNAME={user}; check VISDOM_USERNAME "
            "and VISDOM_PASSWORD against the ones the server was started with"
        )
    except (ConnectionError, OSError):
        return None, f"no visdom server at {where}; start one with `{start_command(server, port)}`"
    return None, (  # it answered, but refused the request: a server with a login, or not visdom
        f"the visdom server at {where} refused the request"
        + (" for this login" if user else "; if it asks for a login, set VISDOM_USERNAME and VISDOM_PASSWORD")
    )


def start_command(server: str, port: int) -> str:
    return f"trainkit visdom --port {port}" + (
        "" if "localhost" in server or "127.0.0.1" in server else " --host 0.0.0.0"
    )


class VisdomSink(Sink):
    """Plots a run into the visdom env `env`; never raises into the training loop."""

    def __init__(
        self, cfg: VisdomConfig, env: str, resume: bool, warn: Callable[[str], None], maxsize: int = 256
    ) -> None:
        self.env = env
        self.classes: list[str] = []
        self.resume = resume
        self.every = cfg.log_every
        self.ready: set[str] = set()  # windows this process has drawn into
        self.dropped = 0
        self.errors = 0
        self.client: Any
        self.client, self.why = connect(cfg.server, cfg.port, env)
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.thread: threading.Thread | None = None
        if self.client is None:
            warn(
                f"warning: {self.why}; training goes on without live plots (metrics.jsonl has them: "
                "`trainkit plot RUN_DIR` draws them later; set log.visdom.enabled: false to silence this)"
            )
            return
        self.thread = threading.Thread(target=self._work, name="trainkit-visdom", daemon=True)
        self.thread.start()

    # ---- the background thread

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a plotting failure must never reach training
                self.errors += 1

    def _submit(self, job: Callable[[], Any]) -> None:
        if self.thread is None:
            return
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1

    # ---- drawing (runs on the thread)

    def _line(self, win: str, x: float, y: float, name: str, xlabel: str) -> None:
        if y is None or not np.isfinite(y):
            return
        X, Y = np.array([x]), np.array([y])
        opts = {"title": WINDOWS[win], "xlabel": xlabel, "showlegend": True}
        if win not in self.ready:
            self.ready.add(win)
            if not (self.resume and self.client.win_exists(win, env=self.env)):
                self.client.line(X=X, Y=Y, win=win, env=self.env, name=name, opts=opts)  # a new run starts afresh
                return
        self.client.line(X=X, Y=Y, win=win, env=self.env, name=name, update="append", opts=opts)

    # ---- the sink interface

    def start(self, info: RunInfo) -> None:
        self.classes = list(info.classes)
        self.text(info.config_text)
        if info.grid is not None:
            self.images(info.grid)

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        if step % self.every and step != steps:
            return
        global_step = (epoch - 1) * steps + step
        loss = stats["loss"]
        self._submit(lambda: self._line("step_loss", global_step, loss, "train", "step"))

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        epoch = record["epoch"]
        for win, keys in EPOCH_TRACES.items():
            for key in keys:
                if key in record:
                    name = key.split("_")[0] if len(keys) > 1 else win
                    value = record[key]
                    self._submit(functools.partial(self._line, win, epoch, value, name, "epoch"))
        if confusion is not None:
            self.confusion(confusion, self.classes)

    def confusion(self, matrix: np.ndarray, classes: list[str]) -> None:
        opts = {
            "title": WINDOWS["confusion"],
            "columnnames": list(classes),
            "rownames": list(classes),
            "xlabel": "predicted",
            "ylabel": "true",
            "colormap": "Viridis",
        }
        m = np.asarray(matrix, dtype=float)  # rows: true class, columns: predicted class
        self._submit(lambda: self.client.heatmap(X=m, win="confusion", env=self.env, opts=opts))

    def images(self, grid: torch.Tensor) -> None:
        arr = grid.detach().cpu().numpy()
        opts = {"title": WINDOWS["samples"], "width": 360, "height": 380}
        self._submit(lambda: self.client.image(arr, win="samples", env=self.env, opts=opts))

    def text(self, yaml_text: str) -> None:
        body = f"<pre>{html.escape(yaml_text)}</pre>"
        self._submit(lambda: self.client.text(body, win="config", env=self.env, opts={"title": WINDOWS["config"]}))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to `timeout` seconds), then stop the thread."""
        if self.thread is None:
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)
        self.thread = None


def replay(records: list[dict[str, Any]], yaml_text: str | None, cfg: VisdomConfig, env: str) -> int:
    """Send a finished run's metrics to visdom (`trainkit plot`); returns the number of epochs sent."""
    sink = VisdomSink(cfg, env, resume=False, warn=lambda msg: None)
    if sink.client is None:
        raise TrainingError(sink.why)
    if yaml_text:
        sink.text(yaml_text)
    for record in records:
        sink.end_epoch(record, None)
    sink.close(timeout=60.0)
    return len(records)
