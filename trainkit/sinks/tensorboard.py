"""`log.tensorboard`: the run in TensorBoard, written with `torch.utils.tensorboard`.

Scalars per epoch (`epoch/...`, x axis the epoch) and every `train.log_every` steps (`step/...`, x axis
the global step), the val confusion matrix as a row-normalised image (and as a table of counts in the
text tab), the sample grid as an image and the resolved config as text. Open it with
`tensorboard --logdir runs/<name>/tb`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.errors import ConfigError
from trainkit.sinks.base import RunInfo, Sink, SinkContext, SinkKind
from trainkit.sinks.schema import TensorBoardConfig

EPOCH_SCALARS = ("train_loss", "val_loss", "train_acc", "val_acc", "train_acc5", "val_acc5", "lr", "images_per_s")
CELL = 16  # pixels per cell of the confusion image, for up to 32 classes


def confusion_image(matrix: np.ndarray) -> torch.Tensor:
    """A (3, H, W) image of the row-normalised matrix: white is 0, dark blue is 1; row 0 at the top."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    share = torch.from_numpy(np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)).float()
    colour = torch.tensor([0.05, 0.2, 0.55]).view(3, 1, 1)
    image = 1.0 - share.unsqueeze(0) * (1.0 - colour)
    cell = max(1, min(CELL, 512 // max(1, m.shape[0])))
    return image.repeat_interleave(cell, 1).repeat_interleave(cell, 2)


def confusion_table(matrix: np.ndarray, classes: list[str]) -> str:
    """The counts as a Markdown table (TensorBoard's text tab renders it)."""
    head = "| true \\ predicted | " + " | ".join(classes) + " |"
    rule = "|---" * (len(classes) + 1) + "|"
    body = [f"| {c} | " + " | ".join(str(int(v)) for v in row) + " |" for c, row in zip(classes, matrix)]
    return "\n".join([head, rule, *body])


class TensorBoardSink(Sink):
    def __init__(self, cfg: TensorBoardConfig, run_dir: Path, log_every: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "log.tensorboard: the tensorboard package is not installed; run `make install` "
                "(or `pip install tensorboard`), or set log.tensorboard.enabled: false"
            ) from None
        self.dir = Path(cfg.dir) if cfg.dir else run_dir / "tb"
        self.every = log_every
        self.classes: list[str] = []
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def start(self, info: RunInfo) -> None:
        self.classes = list(info.classes)
        indented = "\n".join("    " + line for line in info.config_text.splitlines())  # Markdown code block
        self.writer.add_text("config", indented, 0)
        if info.grid is not None:
            self.writer.add_image("samples", info.grid, 0)

    def step(self, epoch: int, step: int, steps: int, stats: dict[str, Any]) -> None:
        global_step = (epoch - 1) * steps + step
        for key in ("loss", "acc", "lr", "images_per_s"):
            value = stats.get(key)
            if isinstance(value, (int, float)) and np.isfinite(value):
                self.writer.add_scalar(f"step/{key}", value, global_step)

    def end_epoch(self, record: dict[str, Any], confusion: np.ndarray | None) -> None:
        epoch = record["epoch"]
        for key in EPOCH_SCALARS:
            if key in record:
                self.writer.add_scalar(f"epoch/{key}", record[key], epoch)
        if confusion is not None:
            self.writer.add_image("confusion", confusion_image(confusion), epoch)
            self.writer.add_text("confusion", confusion_table(confusion, self.classes), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _make(c: SinkContext) -> Sink | None:
    return TensorBoardSink(c.log.tensorboard, c.run_dir, c.log_every) if c.log.tensorboard.enabled else None


SINK = SinkKind(make=_make, files=("tb",))  # its event files, written before the first checkpoint
