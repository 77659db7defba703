"""Evaluation: `evaluate` over batches, test-time augmentation, and `eval_checkpoint` for `trainkit eval`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainkit import checkpoint, config, data, devices, metrics, optim
from trainkit.errors import ConfigError
from trainkit.metrics import EpochMeters


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
    batches: Any,
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
    ckpt = checkpoint.load_checkpoint(path)
    raw = ckpt["config"]
    if data_dir is not None:
        key = "val" if raw.get("data", {}).get("dataset", "imagefolder") == "imagefolder" else "root"
        raw.setdefault("data", {})[key] = data_dir
    raw = config.apply_overrides(raw, overrides, {})
    ckpt["config"] = raw
    cfg, model = checkpoint.rebuild(ckpt, path)
    device = devices.select_device(cfg.device)
    classes = list(ckpt["classes"])
    d = data.build_data(cfg.data, cfg.seed, device, classes=classes, train=False)
    loss_fn = optim.build_loss(cfg.train.loss, classes).to(device)
    model.to(device)
    fmt = devices.channels_last(cfg, model)  # the memory format and autocast training evaluated in: the same numbers
    if fmt:
        model.to(memory_format=torch.channels_last)
    batches = d.batches(d.val_loader, 0)
    meters = evaluate(model, batches, loss_fn, device, len(classes), fmt, cfg.train.amp, cfg.eval.tta)
    result, conf = meters.summary(), meters.confusion_matrix()
    if d.skipped:
        result["bad_images"] = d.skipped
    pc = metrics.per_class(conf)
    return {
        "checkpoint": str(path),
        "epoch": ckpt["epoch"],
        "tta": cfg.eval.tta,
        "weights": "ema" if ckpt.get("ema") else "model",
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
        "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in metrics.most_confused(conf, classes)],
    }
