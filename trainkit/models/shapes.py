"""`inspect-shapes`: per-layer rows from forward hooks, a diagnosis of a failing layer.

`collect` computes rows; `format_report` renders them. Hooks are removed and
the model's train/eval mode restored in a `finally`, also when the pass fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainkit.text import first_line


@dataclass
class Row:
    path: str
    type: str
    depth: int
    input_shape: tuple | None
    output_shape: tuple | None = None
    params: int = 0
    trainable: str = "-"
    leaf: bool = True
    done: bool = False
    output_bytes: int = 0
    expected: int | None = None  # the size argument the input must match (in_features, ...)
    window: tuple[int, ...] = ()  # a conv's or pool's spatial extent (dilated kernel) ...
    padding: tuple[int, ...] = ()  # ... and padding, per spatial axis


@dataclass
class Failure:
    row: Row
    error: str
    expected: str = ""
    fix: str = ""


@dataclass
class Report:
    input_size: tuple
    rows: list[Row] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    param_bytes: int = 0
    activation_bytes: int = 0
    failure: Failure | None = None
    output_shape: tuple | None = None  # the model's own output


def _shape(x: Any) -> tuple | None:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return tuple(x[0].shape)
    return None


def _bytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (tuple, list)):
        return sum(_bytes(t) for t in x)
    return 0


def _trainable(module: nn.Module) -> tuple[int, str]:
    params = list(module.parameters())
    if not params:
        return 0, "-"
    flags = {p.requires_grad for p in params}
    label = "yes" if flags == {True} else "no" if flags == {False} else "partly"
    return sum(p.numel() for p in params), label


def collect(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> Report:
    """Run one forward pass on CPU in eval mode and record every module call."""
    report = Report(input_size=tuple(input_size))
    handles = []
    names = {m: n for n, m in model.named_modules()}
    stack: dict[nn.Module, list[Row]] = {}  # rows of the calls of each module still running (re-entrant calls)

    def pre_hook(module: nn.Module, inputs: tuple) -> None:
        name = names[module]
        params, trainable = _trainable(module)
        kind = type(module).__name__
        attr = _ATTRS.get(kind, (None,))[0]
        window, padding = _window(module)
        report.rows.append(
            Row(
                path=name,
                type=kind,
                depth=name.count(".") + 1,
                input_shape=_shape(inputs),
                params=params,
                trainable=trainable,
                leaf=not any(True for _ in module.children()),
                expected=getattr(module, attr, None) if attr else None,
                window=window,
                padding=padding,
            )
        )
        stack.setdefault(module, []).append(report.rows[-1])

    def post_hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        row = stack[module].pop()
        row.output_shape = _shape(output)
        row.output_bytes = _bytes(output)
        row.done = True

    was_training = model.training
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(post_hook))
        model.eval()
        x = torch.zeros(batch_size, *input_size)
        try:
            with torch.no_grad():
                report.output_shape = _shape(model(x))
        except Exception as exc:  # the model's own error is what we diagnose
            report.failure = diagnose(report.rows, exc, report.input_size)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = list(model.parameters())
    report.total_params = sum(p.numel() for p in params)
    report.trainable_params = sum(p.numel() for p in params if p.requires_grad)
    report.param_bytes = sum(p.numel() * p.element_size() for p in params)
    report.activation_bytes = sum(r.output_bytes for r in report.rows if r.leaf and r.done)
    return report


def _features(rows: list[Row], index: int, count: int) -> str:
    """`= 32x8x8` when the previous layer flattened a shape into `count` features."""
    if index > 0:
        prev = rows[index - 1]
        if prev.input_shape and len(prev.input_shape) > 2 and math.prod(prev.input_shape[1:]) == count:
            return " = " + "x".join(str(d) for d in prev.input_shape[1:])
    return ""


def _window(module: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The spatial extent and padding of a conv or pooling layer (empty for others or string paddings)."""
    kernel, padding = getattr(module, "kernel_size", None), getattr(module, "padding", 0)
    if kernel is None or isinstance(padding, str):
        return (), ()
    kernel = (kernel,) if isinstance(kernel, int) else tuple(kernel)
    n = len(kernel)

    def per_axis(v: Any) -> tuple[int, ...]:
        return (int(v),) * n if isinstance(v, int) else tuple(int(x) for x in v)

    dilation = per_axis(getattr(module, "dilation", 1))
    return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation)), per_axis(padding)


def _too_small(rows: list[Row], index: int) -> str:
    """Why a layer fails when its input has shrunk below its kernel, with the fixes; else ''."""
    row = rows[index]
    if not row.window or not row.input_shape or len(row.input_shape) < 2 + len(row.window):
        return ""
    spatial = row.input_shape[-len(row.window) :]
    if all(s + 2 * p >= w for s, p, w in zip(spatial, row.padding, row.window)):
        return ""
    pools = sum(1 for r in rows[:index] if r.done and r.leaf and "Pool" in r.type)
    after = f" (after {pools} pooling{'s' if pools != 1 else ''})" if pools else ""
    return (
        f"the input is {'x'.join(map(str, spatial))} here{after}, smaller than the "
        f"{'x'.join(map(str, row.window))} kernel; remove a pooling, add padding, or use larger images"
    )


def diagnose(rows: list[Row], exc: Exception, input_size: tuple = ()) -> Failure:
    pending = [i for i, r in enumerate(rows) if not r.done]
    message = first_line(exc)
    if not pending:
        return Failure(Row(path="(model)", type="", depth=0, input_shape=None), message)
    index = pending[-1]
    row = rows[index]
    failure = Failure(row, message)
    shape = row.input_shape
    if not shape or len(shape) < 2:
        return failure
    small = _too_small(rows, index)
    if small:
        failure.fix = small
        return failure
    if row.type not in _ATTRS:
        return failure
    attr, axis, unit = _ATTRS[row.type]
    got = shape[axis]
    expected = row.expected
    if expected is None or expected == got:
        return failure
    extra = _features(rows, index, got) if attr == "in_features" else ""
    failure.expected = f"{row.type} expects {attr}={expected}"
    failure.fix = f"got {got}{extra} {unit}; {row.type} expects {expected}: set {attr} to {got}"
    if unit == "channels" and got == 3 and expected == 1 and tuple(shape[1:]) == tuple(input_size):
        failure.fix = (
            f"got 3 channels; {row.type} expects 1: the images are converted to RGB (3 channels); set {attr} to 3, "
            "or add Grayscale (num_output_channels 1) to both data.transforms.train and data.transforms.val"
        )
    return failure


# Layer type -> (constructor argument, input axis it must match, unit in the message).
_ATTRS = {
    "Linear": ("in_features", -1, "features"),
    "Bilinear": ("in1_features", -1, "features"),
    **{f"Conv{d}d": ("in_channels", 1, "channels") for d in (1, 2, 3)},
    **{f"ConvTranspose{d}d": ("in_channels", 1, "channels") for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": ("num_features", 1, "channels") for d in (1, 2, 3)},
    **{f"InstanceNorm{d}d": ("num_features", 1, "channels") for d in (1, 2, 3)},
    "GroupNorm": ("num_channels", 1, "channels"),
}


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def _fmt_shape(shape: tuple | None) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]" if shape else "-"


def format_report(report: Report) -> str:
    """The table, then totals, then (on failure) the diagnosis."""
    header = ("Layer", "Type", "Input shape", "Output shape", "Params", "Trainable")
    body = []
    for r in report.rows:
        out = _fmt_shape(r.output_shape) if r.done else "FAILED"
        body.append(
            ("  " * (r.depth - 1) + r.path, r.type, _fmt_shape(r.input_shape), out, f"{r.params:,}", r.trainable)
        )
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    lines.append("-" * len(lines[0]))
    lines.append(f"Input size: {_fmt_shape(report.input_size)} (batch of 1)")
    lines.append(f"Total params: {report.total_params:,}")
    lines.append(f"Trainable params: {report.trainable_params:,}")
    lines.append(f"Non-trainable params: {report.total_params - report.trainable_params:,}")
    lines.append(f"Parameter memory: {_human(report.param_bytes)}")
    lines.append(f"Activation memory (forward, batch of 1): {_human(report.activation_bytes)}")
    if report.failure:
        f = report.failure
        lines.append("")
        lines.append(f"FAILED at {f.row.path} ({f.row.type}) with input shape {_fmt_shape(f.row.input_shape)}")
        lines.append(f"  error: {f.error}")
        if f.expected:
            lines.append(f"  expected: {f.expected}")
        if f.fix:
            lines.append(f"  fix: {f.fix}")
    return "\n".join(lines)
