"""`train.finetune`: the new head alone for `frozen_epochs`, with the backbone frozen (its BatchNorm statistics
kept, as `model.freeze` does), then the whole model, the backbone at optim.lr * `unfrozen_lr_scale`.

The optimizer holds the backbone from the start, in a group of its own at the scaled rate: while it is
frozen its parameters have no gradients, so the optimizer leaves them and their state alone. Which phase an
epoch is in follows from its number alone, so a resume lands in the right one, and the optimizer's groups
and the scheduler's state come back from the checkpoint as they were.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainkit.config.train import FinetuneConfig
from trainkit.models import build as models
from trainkit.run import distributed
from trainkit.store.checkpoint import head_of
from trainkit.text import plural


def backbone_names(model: nn.Module) -> set[str]:
    """The trainable parameters outside the final classifier (the last layer with parameters of its own)."""
    head = head_of(model)
    return {n for n, p in model.named_parameters() if p.requires_grad and not (head and n.startswith(head + "."))}


def apply_phase(run: Any, epoch: int) -> None:
    """Freeze or unfreeze the backbone for epoch `epoch` (0-based), and say the switch."""
    ft: FinetuneConfig | None = run.cfg.train.finetune
    if ft is None:
        return
    frozen = epoch < ft.frozen_epochs
    switched = False
    for name, p in run.model.named_parameters():
        if name in run.backbone and p.requires_grad == frozen:
            p.requires_grad_(not frozen)
            switched = True
    run.frozen_norms = models.frozen_norms(run.model)
    if switched and run.dist.enabled:  # DDP reduces the gradients of the parameters that trained when it was made
        run.net = distributed.wrap(run.model, run.dist, run.device, run.cfg.train.compile)
    if epoch == ft.frozen_epochs:
        run.sinks.message(
            f"fine-tune: epoch {epoch + 1}: the backbone trains too, at optim.lr x {ft.unfrozen_lr_scale:g} "
            f"(the head alone for {plural(ft.frozen_epochs, 'epoch')} before)"
        )


def phase_record(run: Any, epoch: int) -> dict[str, Any]:
    """The metrics.jsonl key that says the phase: `backbone_frozen`."""
    ft: FinetuneConfig | None = run.cfg.train.finetune
    return {} if ft is None else {"backbone_frozen": epoch < ft.frozen_epochs}
