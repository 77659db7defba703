"""Checkpoint files: atomic save, safe load, state_dicts that fit a model, RNG state.

It imports nothing of trainkit but its errors, the atomic write and the YAML budget: what a checkpoint holds
is listed by the run (`run.build.PARTS`), and a run is loaded from one by `trained.load.load_trained`.

A checkpoint is a dict of plain data and tensors only (state_dicts, counters,
RNG states, the resolved config as a dict, class names, versions), so it loads
with `torch.load(weights_only=True)` and no pickled code ever runs.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainkit.config.yamlio import check_budget
from trainkit.errors import CheckpointError, ConfigError, TrainingError
from trainkit.store.files import atomic_path
from trainkit.text import first_line, some

FORMAT = "trainkit.checkpoint/1"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP or torch.compile wrappers, so saved keys have no prefixes."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` through `files.atomic_path`: on any failure the previous file at `path` is untouched."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a Python file: a full disk is an OSError
            torch.save(obj, f)
    except OSError as exc:
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise TrainingError(f"could not save checkpoint {path}: {exc.strerror or exc}; {kept}") from exc


def vet_file(path: str | Path, safetensors: bool = False) -> None:
    """The checks before anything of a weights file is read: it is there, it is what torch.save writes (or, with
    `safetensors`, a .safetensors file), and its archive is not made to exhaust memory."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; check the path (a run directory holds last.pt and best.pt)"
        )
    with open(path, "rb") as f:
        head = f.read(9)
    if safetensors and head[8:9] == b"{":  # a little-endian header length, then its JSON
        return
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (or, before 1.6, a pickle)
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({_looks_like(head)}); give the last.pt or best.pt of a run"
        )
    if head.startswith(b"PK"):
        _check_archive(path)


def check_weights_file(path: str) -> None:
    """`model.weights` for a source that loads the file itself (timm): torch.save's or a .safetensors file."""
    vet_file(path, safetensors=True)


def load_file(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` with one clear error per way a file can be bad."""
    path = Path(path)
    vet_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = f"it references {found.group(1)}" if found else "it needs the full unpickler"
        raise CheckpointError(
            f"{path}: refused: it holds pickled Python objects, not only tensors and plain data ({detail}); "
            "trainkit loads weights_only checkpoints; re-save the state_dict with torch.save"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = first_line(exc)
        if "weights_only" in reason:  # torch's advice to unpickle everything: never ours to give
            reason = "torch cannot read it"
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({reason}); use another one, such as best.pt"
        ) from None


def _check_archive(path: Path) -> None:
    """Refuse, before anything is inflated, an archive that torch.save did not write as it writes: torch stores its
    members uncompressed, so a compressed member, or members declaring more bytes than the file holds, mean a file
    made to exhaust memory (or a damaged one)."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load names the damage
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise CheckpointError(
            f"{path}: refused: its archive holds compressed members ({packed[0]}); torch.save stores them "
            "uncompressed, so this file was not written by it (it may be a decompression bomb)"
        )
    declared = sum(m.file_size for m in members)
    if declared > size + 2**20:
        raise CheckpointError(
            f"{path}: refused: its members declare {declared:,} bytes in a file of {size:,}; it is damaged, or made "
            "to exhaust memory"
        )


def _looks_like(head: bytes) -> str:
    kinds = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image", b"%PDF": "a PDF"}
    kind = next((name for magic, name in kinds.items() if head.startswith(magic)), None)
    if kind:
        return f"it is {kind}"
    if not head:
        return "the file is empty"
    try:
        head.decode("utf-8")
        return "it is a text file"
    except UnicodeDecodeError:
        return "its first bytes are of no format trainkit knows"


def is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


# what a checkpoint must hold to be evaluated (and, with RESUMED, resumed): key -> (check, what it must be)
EVALUATED: dict[str, tuple[Any, str]] = {
    "config": (lambda v: isinstance(v, dict), "a mapping"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
    "model": (is_state_dict, "a state_dict"),
    "ema": (lambda v: v is None or is_state_dict(v), "a state_dict or null"),
    "epoch": (lambda v: isinstance(v, int), "an integer"),
}
RESUMED: dict[str, tuple[Any, str]] = {
    "optimizer": (lambda v: isinstance(v, dict), "an optimizer state_dict"),
    "step": (lambda v: isinstance(v, int), "an integer"),
    "best": (lambda v: isinstance(v, dict), "a mapping"),
    "early_stopping": (lambda v: isinstance(v, dict), "a mapping"),
    "rng": (lambda v: isinstance(v, dict), "a mapping"),
}


def load_checkpoint(path: str | Path, resume: bool = False) -> dict:
    """A trainkit checkpoint, checked to carry what `eval` (and `--resume`) need, of the right types."""
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a trainkit checkpoint (no {FORMAT!r} marker); "
            "a bare state_dict can be loaded with model.weights: PATH"
        )
    for key, (ok, what) in (EVALUATED | (RESUMED if resume else {})).items():
        if key not in ckpt and key != "ema":
            raise CheckpointError(f"{path}: a damaged trainkit checkpoint: it has no {key!r}; use another one")
        if not ok(ckpt.get(key)):
            got = type(ckpt.get(key)).__name__
            raise CheckpointError(f"{path}: a damaged trainkit checkpoint: its {key!r} is a {got}, not {what}")
    return ckpt


def describe_mismatch(model: nn.Module, state: dict) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]

    parts = []
    if missing:
        parts.append(f"missing keys: {some(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {some(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches (checkpoint vs model): {some(shapes)}")
    return "; ".join(parts)


def strip_prefixes(state: dict) -> dict:
    """Remove DDP's `module.` and torch.compile's `_orig_mod.` prefixes."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_state(model: nn.Module, state: Any, source: str) -> None:
    """`load_state_dict(strict=True)`, or one line listing what does not fit."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: expected a state_dict (a mapping of names to tensors)")
    state = strip_prefixes(state)
    problems = describe_mismatch(model, state)
    if problems:
        raise CheckpointError(f"{source}: the checkpoint is of another model: {problems}")
    model.load_state_dict(state)


def head_of(model: nn.Module) -> str | None:
    """The name of the final classifier: the last layer that holds parameters of its own."""
    named = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    return named[-1] if named else None


def cache_path(url: str) -> Path:
    """Where torch hub keeps the file of `url`: `$TORCH_HOME/hub/checkpoints/<its file name>`."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def cached_file(url: str, key: str) -> Path:
    """A pretrained file where torch keeps it (`$TORCH_HOME/hub/checkpoints/<the URL's file name>`): there
    already, or downloaded by torch hub (its progress bar, its hash check). Offline: one line that says where
    to put it."""
    import torch.hub

    path = cache_path(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = re.search(r"-([a-f0-9]{8,})\.", os.path.basename(url))
    try:
        torch.hub.download_url_to_file(url, str(path), prefix.group(1) if prefix else None, progress=True)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"{key}: the file is not in torch's cache ({path}) and cannot be downloaded ({first_line(exc)}); "
            f"on a machine with a network: curl -L {url} -o {path}"
        ) from None
    return path


def load_weights(model: nn.Module, path: str, key: str = "model.weights") -> str | None:
    """`model.weights`: a bare state_dict file, or a trainkit checkpoint's model (its average, with train.ema);
    also the file of `model.pretrained` (`path` its URL: `cached_file`). `key` names it in messages.

    As timm does when `num_classes` changes, the final classifier's tensors whose shape differs (another
    number of classes) are not loaded and keep their initialization; the line that says so is returned.
    Any other difference is an error.
    """
    if path.startswith(("https://", "http://")):
        path = str(cached_file(path, key))
    state = load_file(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        state = inference_weights(state)
    source = f"{key} {path}"
    head, own = head_of(model), model.state_dict()
    note = None
    if head is not None and isinstance(state, dict):
        state = strip_prefixes(state)
        keys = [k for k in own if k.startswith(head + ".") and k in state and hasattr(state[k], "shape")]
        # only another number of classes: the first dimension differs, the others agree
        skipped = [k for k in keys if state[k].shape[1:] == own[k].shape[1:] and state[k].shape != own[k].shape]
        if skipped:
            ours, theirs = own[skipped[0]].shape[0], state[skipped[0]].shape[0]
            state = {k: v for k, v in state.items() if k not in skipped} | {k: own[k] for k in skipped}
            theirs_are = "the checkpoint" if key == "model.weights" else "the weights"
            note = f"{key}: {', '.join(skipped)} not loaded (the head has {ours} classes, {theirs_are} {theirs})"
    load_state(model, state, source)
    return note


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    np_state: Any = np.random.get_state()
    py_version, py_keys, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": [py_version, list(py_keys), py_gauss],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))


def inference_weights(ckpt: dict) -> Any:
    """The weights a checkpoint is evaluated with: the moving average when it has one (train.ema)."""
    ema = ckpt.get("ema")
    return ema if ema is not None else ckpt.get("model")


def read_checkpoint(path: str | Path, resume: bool = False) -> dict[str, Any]:
    """A trainkit checkpoint, safely loaded and checked to carry what `eval` (and `--resume`) need."""
    ckpt = load_checkpoint(path, resume)
    try:
        check_budget(ckpt["config"], f"{path}: its stored config")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return ckpt
