"""`trainkit eval` from a checkpoint alone: its result (loss, accuracy, per class, confusion) and its report,
and each val image's prediction for `trainkit report`. Both go through `run.evaluation.outputs`, the loop
training evaluates with."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit import text
from trainkit.data.loaders import epoch_batches
from trainkit.data.split import SPLIT_FILE
from trainkit.errors import DataError
from trainkit.models import optim
from trainkit.run import metrics
from trainkit.run.evaluation import evaluate, outputs
from trainkit.store.files import write_text_atomic
from trainkit.text import fmt_pct
from trainkit.trained.load import Trained, load_trained


def eval_checkpoint(
    path: str,
    data_dir: str | None = None,
    overrides: tuple[str, ...] = (),
    trust_code: bool = False,
    test: bool = False,
) -> dict[str, Any]:
    """Rebuild model and val data (`test`: the test set) from a checkpoint alone and evaluate them as training
    did."""
    t = load_trained(path, overrides, data_dir, trust_code=trust_code)
    try:
        d = t.test_data() if test else t.val_data()
    except DataError as exc:
        if data_dir is not None or SPLIT_FILE in str(exc):  # a split file to delete, not data that moved
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
            if pc["support"][i]  # data of some of the classes: the metrics of those present
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
    conf = result["confusion"]
    present = [i for i, row in enumerate(conf) if sum(row)]  # data of some of the classes: the rows it has
    names = max(text.width(c) for c in classes + ["class"])
    lines.append("")
    lines.append(f"{text.ljust('class', names)}  accuracy  precision  recall   support")
    for i in present:
        c, m = classes[i], result["per_class"][classes[i]]  # present: in per_class
        lines.append(
            f"{text.ljust(c, names)}  {fmt_pct(m['accuracy']):>8}  {fmt_pct(m['precision']):>9}  "
            f"{fmt_pct(m['recall']):>7}  {m['support']:>7}"
        )
    # each column as wide as its count, or its name up to 12 columns (cut with an ellipsis beyond)
    cells = [max(len(str(max(r[j] for r in conf))), min(12, text.width(c))) + 2 for j, c in enumerate(classes)]
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    lines.append(" " * names + "".join(text.rjust(text.clip(c, w - 2), w) for c, w in zip(classes, cells)))
    for i in present:
        lines.append(text.ljust(classes[i], names) + "".join(str(v).rjust(w) for v, w in zip(conf[i], cells)))
    lines.append("")
    pairs = result["most_confused"]
    lines.append("most confused pairs (true -> predicted):" + ("" if pairs else " none"))
    lines += [f"  {p['true']} -> {p['predicted']}: {p['count']}" for p in pairs]
    return "\n".join(lines)


@dataclass
class Predictions:
    """The checkpoint's predictions on its val data, in the val set's order."""

    true: np.ndarray
    pred: np.ndarray
    prob: np.ndarray  # of the predicted class
    images: Any  # the val dataset, to show an image by its index


@torch.inference_mode()
def val_predictions(t: Trained) -> Predictions:
    """The checkpoint's prediction for each val image (for the report's most-confused images)."""
    d = t.val_data()
    true, pred, prob = [], [], []
    for logits, y in outputs(t.model, epoch_batches(d.val_loader, 0), t.device, t.channels_last, t.amp, t.tta):
        p = torch.softmax(logits.float(), dim=1).cpu()
        best = p.max(dim=1)
        true.append(y.cpu().numpy())
        pred.append(best.indices.numpy())
        prob.append(best.values.numpy())
    return Predictions(np.concatenate(true), np.concatenate(pred), np.concatenate(prob), d.val_set)


def test_line(result: dict[str, Any]) -> str:
    """The test set's result as training says it at its end."""
    name = os.path.basename(str(result["checkpoint"]))
    return f"test_acc {fmt_pct(result['val_acc'])} ({name}, epoch {result['epoch']}, {result['samples']:,} images)"


def evaluate_test(run_dir: Path, trust_code: bool = True) -> str:
    """The test set, once, at the end of training: best.pt (else last.pt) on it, written to test.json; the line
    that says it."""
    ckpt = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    result = eval_checkpoint(str(ckpt), trust_code=trust_code, test=True)
    record = {k.replace("val_", "test_", 1): v for k, v in result.items()}
    write_text_atomic(run_dir / "test.json", json.dumps(record, indent=1) + "\n")
    return test_line(result)
