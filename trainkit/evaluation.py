"""Evaluation: `evaluate` over batches, test-time augmentation, and `trainkit eval`'s result and report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainkit import devices, metrics, optim
from trainkit.errors import ConfigError, DataError
from trainkit.loaders import epoch_batches
from trainkit.metrics import EpochMeters, fmt_pct
from trainkit.trained import load_trained


def predict(net: nn.Module, x: torch.Tensor, tta: str = "off") -> torch.Tensor:
    """Logits for `x`; with test-time augmentation, the mean over the augmented views.

    `flip` averages the image and its mirror; `flip_translate` also averages both shifted by one
    pixel up-left and down-right (reflect padding), weighted as airbench does: 1/2 for the
    unshifted pair, 1/4 for each shifted pair.
    """
    if tta == "off":
        return net(x)
    if x.dim() != 4:
        raise ConfigError(
            f"eval.tta: {tta} needs image batches (N, C, H, W), got shape {list(x.shape)}; set eval.tta: off"
        )

    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return (net(v).float() + net(v.flip(3)).float()) / 2

    logits = mirrored(x)
    if tta == "flip_translate":
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        h, w = x.shape[-2:]
        padded = F.pad(x.float(), (1, 1, 1, 1), mode="reflect").to(x.dtype)
        shifted = [padded[..., :h, :w], padded[..., 2 : h + 2, 2 : w + 2]]
        logits = 0.5 * logits + 0.25 * sum(mirrored(v.contiguous(memory_format=fmt)) for v in shifted)
    return logits


@torch.inference_mode()
def evaluate(
    net: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    device: torch.device,
    num_classes: int,
    channels_last: bool = False,
    amp: str = "off",
    tta: str = "off",
) -> EpochMeters:
    """Meters (loss, top-1/top-5, confusion matrix) over `batches`, an iterable of (x, y), in eval mode."""
    was_training = net.training
    net.eval()
    meters = EpochMeters(num_classes)
    try:
        for x, y in batches:
            x, y = devices.to_device(x, y, device, channels_last)
            with devices.autocast(device, amp):
                logits = predict(net, x, tta)
                loss = loss_fn(logits, y)
            meters.add(loss, logits, y)
        meters.flush()
        return meters
    finally:
        net.train(was_training)


def eval_checkpoint(path: str, data_dir: str | None = None, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Rebuild model and val data from a checkpoint alone and evaluate them as training did."""
    t = load_trained(path, overrides, data_dir)
    try:
        d = t.val_data()
    except DataError as exc:
        if data_dir is not None:
            raise
        raise DataError(f"{exc}; if the data has moved, give its new place with --data DIR") from None
    loss_fn = optim.build_loss(t.cfg.train.loss, t.classes).to(t.device)
    meters = evaluate(
        t.model, epoch_batches(d.val_loader, 0), loss_fn, t.device, len(t.classes), t.channels_last, t.amp, t.tta
    )
    result, conf = meters.summary(), meters.confusion_matrix()
    if d.skipped:
        result["bad_images"] = d.skipped
    pc = metrics.per_class(conf)
    classes = t.classes
    return {
        "checkpoint": str(path),
        "epoch": t.epoch,
        "tta": t.tta,
        "weights": t.weights,
        "val_loss": result["loss"],
        "val_acc": result["acc"],
        **({"val_acc5": result["acc5"]} if "acc5" in result else {}),
        "samples": result["samples"],
        "classes": classes,
        "per_class": {
            c: {
                "accuracy": pc["recall"][i],
                "precision": pc["precision"][i],
                "recall": pc["recall"][i],
                "support": pc["support"][i],
            }
            for i, c in enumerate(classes)
        },
        "confusion": conf.tolist(),
        "most_confused": [{"true": a, "predicted": b, "count": n} for a, b, n in metrics.most_confused(conf, classes)],
    }


def format_eval(result: dict[str, Any]) -> str:
    """The eval report: summary, per-class table, confusion matrix with class names, top confusions."""
    classes = result["classes"]
    tta = result.get("tta", "off")
    lines = [
        f"checkpoint {result['checkpoint']} (epoch {result['epoch']}), {result['samples']} images"
        + (f", test-time augmentation: {tta}" if tta != "off" else "")
        + (", the moving average of the weights (train.ema)" if result.get("weights") == "ema" else "")
    ]
    lines.append(
        f"loss {result['val_loss']:.4f}  top-1 {fmt_pct(result['val_acc'])}  top-5 {fmt_pct(result.get('val_acc5'))}"
    )
    width = max(len(c) for c in classes + ["class"])
    lines.append("")
    lines.append(f"{'class'.ljust(width)}  accuracy  precision  recall   support")
    for c in classes:
        m = result["per_class"][c]
        lines.append(
            f"{c.ljust(width)}  {fmt_pct(m['accuracy']):>8}  {fmt_pct(m['precision']):>9}  "
            f"{fmt_pct(m['recall']):>7}  {m['support']:>7}"
        )
    conf = result["confusion"]
    cell = max(5, max(len(str(v)) for row in conf for v in row) + 1)
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    lines.append(" " * width + "".join(c[: cell - 1].rjust(cell) for c in classes))
    for c, row in zip(classes, conf):
        lines.append(c.ljust(width) + "".join(str(v).rjust(cell) for v in row))
    lines.append("")
    pairs = result["most_confused"]
    lines.append("most confused pairs (true -> predicted):" + ("" if pairs else " none"))
    lines += [f"  {p['true']} -> {p['predicted']}: {p['count']}" for p in pairs]
    return "\n".join(lines)
