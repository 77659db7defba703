"""`trainkit train --fast-dev-run [N]`: every part of a run on N batches, as Lightning's `fast_dev_run`.

N training and N val batches of one epoch through the real data, model, loss, optimizer, scheduler and
sinks; a checkpoint saved and loaded back through the same path `eval` uses. Its files go to a temporary
folder that is removed after, unless a run directory was given.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import torch

from trainkit.errors import TrainingError
from trainkit.run import loop as engine
from trainkit.run.build import build_run
from trainkit.run.config import Config
from trainkit.store import checkpoint
from trainkit.trained.load import load_trained


def temporary_run_dir() -> Path:
    """A fresh path under the temporary folder, not created: the run creates it at its checkpoint, and a run
    that fails before it leaves nothing (see `RunFiles`)."""
    return Path(tempfile.gettempdir()) / f"trainkit-fast-dev-run-{uuid.uuid4().hex[:12]}" / "run"


def fast_dev_run(cfg: Config, batches: int, keep: bool) -> str:
    """Run it; returns the line that says what passed. `keep`: leave the files in `cfg.run_dir`."""
    run = build_run(cfg, limit_batches=batches)
    run.temporary = not keep
    try:
        record = engine.fit(run)
        trained = load_trained(run.run_dir / "last.pt", device=str(run.device), trust_code=True)  # its own config
        saved, loaded = checkpoint.unwrap(run.model).state_dict(), trained.model.state_dict()
        if any(not torch.equal(saved[k].cpu(), loaded[k].cpu()) for k in saved):
            raise TrainingError(f"{run.run_dir / 'last.pt'}: the weights loaded back differ from the model's")
    finally:
        if not keep:
            shutil.rmtree(run.run_dir.parent, ignore_errors=True)
    assert run.data.train_loader is not None
    train_batches = min(batches, run.data.train_loader.steps_per_epoch)
    val_batches = min(batches, run.data.val_loader.steps_per_epoch)
    where = f"its files are in {run.run_dir}" if keep else "nothing was written under runs/"
    return (
        f"fast-dev-run: {train_batches} training and {val_batches} validation batches passed "
        f"(train_loss {record['train_loss']:.4f}, val_loss {record['val_loss']:.4f}); checkpoint saved and "
        f"loaded back; {where}"
    )
