"""`trainkit export`: the trained model (its EMA weights when the run kept them) as TorchScript, a
`torch.export` ExportedProgram or ONNX, with a sidecar FILE.json that says how to feed it.

The export is verified before success is reported: the exported file is loaded back and run on a batch
of real val images beside the eager model; if their logits differ by more than 1e-4 plus 1e-3 of the largest
logit (the runtimes fuse and reorder float32 arithmetic: a deep network's logits move by ~1e-4 of their scale,
a wrong export by their whole scale), the file is removed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from trainkit.data import transforms
from trainkit.data.images import BadSample, read_sample
from trainkit.errors import ConfigError, DataError, TrainingError
from trainkit.store.files import atomic_path, write_text_atomic
from trainkit.text import first_line
from trainkit.trained.load import Trained, load_trained
from trainkit.trained.predict import check_out, find_images

TOLERANCE = 1e-4  # float32, absolute
RELATIVE = 1e-3  # of the largest logit (torch.onnx's own verification uses rtol 1e-3)
SAMPLES = 8
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def parse_batch(batch: str) -> int | None:
    """None for `dynamic`, else a fixed batch size."""
    if batch == "dynamic":
        return None
    if not batch.isdigit() or int(batch) < 1:
        raise ConfigError(f"--batch {batch}: give `dynamic` or a whole number of at least 1")
    return int(batch)


def check_onnx() -> None:
    import importlib.util

    missing = [m for m in ONNX_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"export --format onnx needs {', '.join(missing)}, which is not installed; "
            "install it with `pip install 'trainkit[export]'` (make install does)"
        )


def val_images(t: Trained, data_dir: str | None) -> torch.Tensor | None:
    """Up to SAMPLES val images of one size after the val transforms, or None when none can be read."""
    cfg = t.cfg.data
    source = data_dir or (getattr(cfg, cfg.kind.files_key) if cfg.kind.files_key else None)
    if source is None:
        return None
    try:
        paths = find_images([source], t.classes, key="--data").paths
    except DataError:
        if data_dir is not None:
            raise
        return None
    transform = t.transform
    images: list[torch.Tensor] = []
    for path in paths:
        x = read_sample(path, transform)
        if not isinstance(x, BadSample) and (not images or x.shape == images[0].shape):
            images.append(x)
        if len(images) == SAMPLES:
            break
    return torch.stack(images) if images else None


def example_batch(t: Trained, data_dir: str | None, input_size: list[int] | None, batch: int | None) -> tuple[torch.Tensor, str]:  # fmt: skip
    """The batch to export with and verify on, and what it is."""
    x = val_images(t, data_dir)
    if x is not None:
        if input_size and list(x.shape[1:]) != list(input_size):
            raise ConfigError(
                f"--input-size {' '.join(map(str, input_size))}: the val images are {' '.join(map(str, x.shape[1:]))} "
                "after the checkpoint's val transforms; leave --input-size out"
            )
        what = f"{len(x)} val images"
    elif input_size:
        x = torch.randn(SAMPLES, *input_size, generator=torch.Generator().manual_seed(0))
        what = f"{SAMPLES} random inputs (no val images found; give --data DIR to verify on real ones)"
    else:
        raise ConfigError(
            "export: no val images to take the input size from; give --input-size C H W, or --data DIR with images"
        )
    n = batch or max(2, len(x))  # a dynamic batch is traced with at least 2, so it is not fixed at 1
    x = x.repeat((n + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:n]
    return x.contiguous(), what


def _torchscript(model: nn.Module, x: torch.Tensor, out: str, dynamic: bool) -> Any:
    with warnings.catch_warnings():  # torch 2.14 calls TorchScript deprecated; it is still what many runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model, x).save(out)
        return torch.jit.load(out)


def _exported_program(model: nn.Module, x: torch.Tensor, out: str, dynamic: bool) -> Any:
    shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), out)
    return torch.export.load(out).module()


def _onnx(model: nn.Module, x: torch.Tensor, out: str, dynamic: bool) -> Any:
    import onnxruntime

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        torch.onnx.export(
            model,
            (x,),
            out,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: "batch"},) if dynamic else None,
            dynamo=True,
            external_data=False,
        )
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    return lambda v: torch.from_numpy(session.run(["logits"], {"images": v.numpy()})[0])


EXPORTERS = {"torchscript": _torchscript, "exported-program": _exported_program, "onnx": _onnx}


def sidecar(t: Trained, fmt: str, x: torch.Tensor, batch: int | None, diff: float) -> dict[str, Any]:
    calls = transforms.val_calls(t.cfg.data)
    norm = transforms.normalize_of(calls)
    mean = std = None
    if norm is not None:
        mean = norm.kwargs.get("mean", norm.args[0] if norm.args else None)
        std = norm.kwargs.get("std", norm.args[1] if len(norm.args) > 1 else None)
    return {
        "format": fmt,
        "checkpoint": t.path,
        "epoch": t.epoch,
        "weights": t.weights,
        "classes": t.classes,
        "input": {"name": "images", "layout": "NCHW", "dtype": "float32", "batch": batch or "dynamic"},
        "input_size": list(x.shape[1:]),
        "channel_order": "RGB",
        "scale": "pixel values / 255 (ToTensor), then (x - mean) / std per channel",
        "mean": mean,
        "std": std,
        "transforms": [{"name": c.name, "args": c.args, "kwargs": c.kwargs} for c in calls],
        "output": {"name": "logits", "softmax": "not applied"},
        "max_abs_diff": diff,
    }


def _verify(
    t: Trained, model: nn.Module, fmt: str, x: torch.Tensor, tmp: str, batch: int | None
) -> tuple[float, float]:
    """Export `model` to `tmp`, load it back; the largest difference of its logits from the model's, and the
    difference allowed for logits of the model's scale."""
    try:
        with torch.no_grad():
            loaded = EXPORTERS[fmt](model, x, tmp, batch is None)
            expected = t.model(x.to(memory_format=torch.channels_last) if t.channels_last else x).float()
            got = torch.as_tensor(loaded(x)).float()
        return float((expected - got).abs().max()), TOLERANCE + RELATIVE * float(expected.abs().max())
    except (ConfigError, TrainingError):
        raise
    except Exception as exc:
        raise TrainingError(f"export --format {fmt}: the model could not be exported: {first_line(exc)}") from None


def export(
    ckpt: str,
    fmt: str,
    out: str,
    input_size: list[int] | None,
    batch_arg: str,
    data_dir: str | None,
    trust_code: bool = False,
) -> str:
    """Export, verify and write the sidecar; returns the report."""
    batch = parse_batch(batch_arg)
    check_out(out, (".pt2",) if fmt == "exported-program" else ("",))  # torch.export.load reads .pt2 files only
    if fmt == "onnx":
        check_onnx()
    t = load_trained(ckpt, device="cpu", trust_code=trust_code)
    x, what = example_batch(t, data_dir, input_size, batch)
    model = copy.deepcopy(t.model).float().to(memory_format=torch.contiguous_format).eval()
    with atomic_path(out, keep_suffix=True) as tmp:  # `out` appears only once verified; an earlier one stays
        diff, allowed = _verify(t, model, fmt, x, str(tmp), batch)
        if not np.isfinite(diff) or diff > allowed:
            raise TrainingError(
                f"export --format {fmt}: the exported model's logits differ from the model's by {diff:.2e} "
                f"(more than {allowed:.2e}, {TOLERANCE:g} + {RELATIVE:g} of the largest logit) on {what}; nothing was written"
            )
    info = sidecar(t, fmt, x, batch, diff)
    write_text_atomic(f"{out}.json", json.dumps(info, indent=2) + "\n")
    size = " x ".join(map(str, x.shape[1:]))
    return (
        f"wrote {out} ({fmt}, {t.weights} weights of epoch {t.epoch}, input {size}, batch {batch or 'dynamic'})\n"
        f"verified on {what}: the largest difference of the logits is {diff:.2e} (at most {allowed:.2e})\n"
        f"wrote {out}.json (classes, input size, mean and std, transforms)"
    )
