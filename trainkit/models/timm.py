"""`model.timm: NAME` with `model.args` (the optional extra `timm`): built by `timm.create_model` with a head of
the data's classes. `model.pretrained: true` (or a tag: `fb_in22k`, `convnext_tiny.fb_in22k`) loads through
timm's own loading from the Hugging Face cache, offline; `model.weights: FILE` through
`pretrained_cfg_overlay=dict(file=FILE)`, which keeps the model's own pretrained_cfg. The default transforms
come from that pretrained_cfg (`timm.data.resolve_data_config`), as timm's own scripts take them.

The Hub is never asked for anything: HF_HUB_OFFLINE is set during every call, so a model that is not cached
is one line at once, with the command that fetches it, not a wait on the network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from trainkit.errors import ConfigError, key_error
from trainkit.models.source import ModelSource, Pretrained
from trainkit.text import first_line, suggest

INSTALL = "pip install 'trainkit[timm]' (make install does)"


def _timm(key: str) -> Any:
    try:
        with offline():
            import timm
    except ImportError:
        raise key_error(key, f"needs timm, which is not installed: {INSTALL}") from None
    return timm


@contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE for the duration: read by huggingface_hub at its import, and by its constant after."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants

        constants: Any = huggingface_hub.constants
    except ImportError:
        constants = None
    was = constants.HF_HUB_OFFLINE if constants else None
    if constants:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants:
            constants.HF_HUB_OFFLINE = was
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def tag_of(cfg: Any, path: str) -> str | None:
    """The full `arch.tag` of `model.pretrained` (None: no named weights); an unknown one lists the model's."""
    timm = _timm(f"{path}.timm")
    arch = cfg.timm.split(".", 1)[0]
    if cfg.pretrained in (None, False):
        return None
    tags = timm.list_pretrained(f"{arch}.*")
    if not tags:
        raise key_error(f"{path}.pretrained", f"timm has no pretrained weights for {arch}; leave model.pretrained out")
    given = cfg.pretrained if isinstance(cfg.pretrained, str) else cfg.timm if "." in cfg.timm else None
    if given is None:
        default = timm.models.get_pretrained_cfg(arch)  # timm's default tag for the architecture
        return f"{arch}.{default.tag}" if default is not None and default.tag else str(tags[0])
    full = given if given.startswith(arch + ".") else f"{arch}.{given}"
    if full not in tags:
        short = [t.split(".", 1)[1] for t in tags]
        raise key_error(
            f"{path}.pretrained",
            f"{arch} has no weights {given!r}{suggest(full.split('.', 1)[1], short)}; its weights are {', '.join(short)}",
        )
    return full


def check_timm(cfg: Any, path: str) -> Any:
    timm = _timm(f"{path}.timm")
    arch = cfg.timm.split(".", 1)[0]
    if not timm.is_model(arch):
        raise key_error(f"{path}.timm", f"timm has no model {arch!r}{suggest(arch, timm.list_models())}")
    for reserved in ("pretrained", "pretrained_cfg_overlay", "checkpoint_path"):
        if reserved in cfg.args:
            raise key_error(f"{path}.args.{reserved}", "weights come from model.pretrained or model.weights")
    return tag_of(cfg, path)


def _pretrained_cfg(cfg: Any) -> Any:
    timm = _timm("model.timm")
    return timm.models.get_pretrained_cfg(cfg.net or cfg.timm.split(".", 1)[0])


def timm_weights(cfg: Any) -> Pretrained | None:
    """The weights of `model.pretrained` (or the model's own pretrained_cfg, for `model.weights: FILE`): their
    preprocessing as timm resolves it, and what the checkpoint records."""
    if cfg.net is None and not cfg.weights:
        return None
    timm = _timm("model.timm")
    pc = _pretrained_cfg(cfg)
    if pc is None:
        return None
    data = timm.data.resolve_data_config(pretrained_cfg=pc.to_dict())
    crop = int(data["input_size"][-1])
    meta = {k: v for k, v in (("license", pc.license), ("paper", pc.paper_name), ("origin", pc.origin_url)) if v}
    return Pretrained(
        name=f"timm {cfg.net}" if cfg.net else f"timm {cfg.timm} from {cfg.weights}",
        url=f"hf-hub:{pc.hf_hub_id}" if pc.hf_hub_id else str(pc.url or ""),
        resize=int(math.floor(crop / data["crop_pct"])),
        crop=crop,
        mean=[float(v) for v in data["mean"]],
        std=[float(v) for v in data["std"]],
        interpolation=data["interpolation"]
        if data["interpolation"] in ("nearest", "bilinear", "bicubic")
        else "bilinear",
        meta=meta,
        categories=_categories(timm, pc),
    )


def _categories(timm: Any, pc: Any) -> list[str] | None:
    """The class names of the weights' own head (ImageNet's, for an in1k tag)."""
    if pc.label_names:
        return list(pc.label_names)
    if pc.num_classes == 1000 and (pc.tag or "").endswith(("in1k", "ft_in1k")):
        return [str(d).split(",")[0] for d in timm.data.ImageNetInfo("imagenet-1k").label_descriptions()]
    return None


def _args(cfg: Any, num_classes: int | None) -> dict[str, Any]:
    args = dict(cfg.args)
    if num_classes is not None:
        args.setdefault("num_classes", num_classes)
    return args


def _create(cfg: Any, name: str, **kwargs: Any) -> Any:
    timm = _timm("model.timm")
    try:
        with offline():
            return timm.create_model(name, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model.args: timm {cfg.timm} rejected its arguments: {first_line(exc)}") from None


def build_timm(cfg: Any, num_classes: int | None) -> Any:
    """The architecture with random weights (its weights come later, from a checkpoint)."""
    return _create(cfg, cfg.timm, **_args(cfg, num_classes))


def load_timm(cfg: Any, num_classes: int | None) -> tuple[Any, str | None]:
    """The model with its weights, by timm's own loading: from the Hugging Face cache (offline), or the file of
    `model.weights` (checked by the store first). A head of another number of classes is timm's fresh one; the
    line that says so is returned."""
    key = "model.weights" if cfg.weights else f"model.pretrained {cfg.net}"
    if cfg.weights:
        name, extra = cfg.timm, {"pretrained_cfg_overlay": {"file": os.path.abspath(cfg.weights)}}
    else:
        _check_cached(cfg.net)
        name, extra = cfg.net, {}
    args = _args(cfg, num_classes)
    try:
        model = _create(cfg, name, pretrained=True, **extra, **args)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{key}: timm could not load them into {cfg.timm}: {first_line(exc)}") from None
    own = model.pretrained_cfg.get("num_classes")
    head = model.pretrained_cfg.get("classifier")
    if own and args.get("num_classes") not in (None, own):
        return model, f"{key}: {head} not loaded (the head has {args['num_classes']} classes, the weights {own})"
    return model, None


def _check_cached(tag: str) -> None:
    """The weights' file in the Hugging Face cache, or one line that says how to fetch it."""
    import huggingface_hub

    timm = _timm("model.timm")
    pc = timm.models.get_pretrained_cfg(tag)
    repo = pc.hf_hub_id or ""
    if not repo:
        return  # weights by URL: torch hub's cache (timm's load_state_dict_from_url)
    files = [pc.hf_hub_filename] if pc.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    if any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f), str) for f in files):
        return
    folder = os.path.join(huggingface_hub.constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    raise ConfigError(
        f"model.pretrained {tag}: the weights are not in the Hugging Face cache ({folder}) and trainkit does not "
        f"go online for them; on a machine with a network: hf download {repo} {files[0]}"
    )


SOURCE = ModelSource(
    check=check_timm,
    build=build_timm,
    describe=lambda cfg: f"timm {cfg.timm}" + (f" ({cfg.net})" if cfg.net else ""),
    pretrained=timm_weights,
    load=load_timm,
)
