"""The fast data path: caches, batched augmentation, subsets, and training on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_image_folder, tiny_config
from PIL import Image
from torchvision.transforms import v2

from trainkit.config.specs import ToTensor
from trainkit.data import build as data
from trainkit.data import images
from trainkit.data.augment import BatchAugment, flip, random_crop
from trainkit.data.cache import cache_dataset
from trainkit.errors import DataError
from trainkit.run import config, devices
from trainkit.run import loop as engine
from trainkit.run.build import build_run

CPU = torch.device("cpu")


def batch(n: int = 64, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_deterministic_transforms_match_the_per_sample_pipeline():
    t = v2.Compose([v2.CenterCrop(10), v2.Pad(2), ToTensor(), v2.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])])
    x = batch()
    out = BatchAugment(t, CPU)(x, torch.Generator())
    assert torch.allclose(out, torch.stack([t(img) for img in x]), atol=1e-6)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_random_crop_picks_a_valid_window_per_sample(mode):
    x = batch(32)
    out = random_crop((12, 12), [3, 3, 3, 3], mode)(x, torch.Generator().manual_seed(1))
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    padded = F.pad(x.float(), [3, 3, 3, 3], mode=torch_mode).to(torch.uint8)
    offsets = set()
    for i in range(len(x)):
        hits = [
            (oy, ox)
            for oy in range(7)
            for ox in range(7)
            if torch.equal(padded[i, :, oy : oy + 12, ox : ox + 12], out[i])
        ]
        assert hits, f"sample {i} is not a crop of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 10  # offsets differ from sample to sample


def test_flips_follow_their_probability():
    x = batch(1000, size=4)
    assert torch.equal(flip(1.0, 3)(x, torch.Generator()), x.flip(3))
    assert torch.equal(flip(0.0, 3)(x, torch.Generator()), x)
    out = flip(0.5, 3)(x, torch.Generator().manual_seed(0))
    flipped = sum(torch.equal(o, i.flip(2)) and not torch.equal(o, i) for o, i in zip(out, x))
    assert 430 < flipped < 570  # 1000 draws at p=0.5: 3.5 standard deviations either side


def test_a_transform_without_batched_form_runs_per_sample_and_is_reported():
    t = v2.Compose([v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.5), ToTensor()])
    aug = BatchAugment(t, CPU)
    assert aug.fallbacks == ["ColorJitter"]
    out = aug(batch(8), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 12, 12) and out.dtype == torch.float32
    again = aug(batch(8), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded per batch: reproducible


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_image_folder(tmp_path / "imgs", {"a": 5, "b": 4}, size=8, ext="jpg")
    return tmp_path / "imgs"


def test_memory_cache_holds_the_decoded_images(folder):
    ds = images.ImageFolder(str(folder), None, "data.train")
    cached = cache_dataset(ds, "memory", None, 2, "data.train")
    assert cached.images.shape == (9, 3, 8, 8) and cached.images.dtype == torch.uint8
    assert cached.targets.tolist() == [0] * 5 + [1] * 4
    first = np.asarray(Image.open(ds.samples[0][0]).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(cached.images[0].numpy(), first)


def test_disk_cache_is_reused_and_never_stale(folder, tmp_path):
    ds = images.ImageFolder(str(folder), None, "data.train")
    first = cache_dataset(ds, "disk", str(tmp_path / "cache"), 2, "data.train")
    again = cache_dataset(ds, "disk", str(tmp_path / "cache"), 2, "data.train")
    assert (first.source, again.source) == ("disk", "disk hit")
    assert torch.equal(first.images, again.images)
    victim = Path(ds.samples[0][0])
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(victim)  # same name, new content
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = cache_dataset(
        images.ImageFolder(str(folder), None, "data.train"), "disk", str(tmp_path / "cache"), 2, "data.train"
    )
    assert changed.source == "disk"  # a new key: rebuilt, not served stale
    assert changed.images[0].float().mean() < 5 and not torch.equal(changed.images[0], first.images[0])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_cache_refuses_mixed_sizes_and_names_bad_files(folder, tmp_path):
    Image.fromarray(np.zeros((9, 8, 3), dtype=np.uint8)).save(folder / "a" / "tall.png")
    with pytest.raises(DataError, match=r"data.train: data.cache needs images of one size, found 8x8 and 8x9"):
        cache_dataset(images.ImageFolder(str(folder), None, "data.train"), "memory", None, 2, "data.train")
    (folder / "a" / "tall.png").unlink()
    (folder / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    cached = cache_dataset(images.ImageFolder(str(folder), None, "data.train"), "memory", None, 2, "data.train")
    assert len(cached.targets) == 9 and len(cached.skipped) == 1 and "broken.jpg" in cached.skipped[0]


def cache_cfg(tmp_path: Path, tiny_data: Path, **data_extra) -> dict:
    return tiny_config(
        tiny_data,
        tmp_path / "run",
        data={
            "cache": "memory",
            "transforms": {"train": [{"RandomCrop": {"size": 16, "padding": 2}}, "RandomHorizontalFlip", "ToTensor"]},
            **data_extra,
        },
        train={"epochs": 2, "log_every": 2},
    )


def test_training_on_the_cache_and_a_bad_image_error(tmp_path, tiny_data):
    run = build_run(config.from_dict(cache_cfg(tmp_path, tiny_data)))
    assert any("24 images of (3, 16, 16) cached (memory" in n for n in run.data.notes)
    record = engine.fit(run)
    assert record["epoch"] == 2 and record["val_acc"] >= 0.5
    (tiny_data / "train" / "dog" / "bad.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"data.train: 1 file is not a readable image: .*dog/bad.jpg"):
        build_run(config.from_dict(cache_cfg(tmp_path / "2", tiny_data)))


def test_subset_is_seeded_and_sized(tmp_path, tiny_data):
    cfg = config.from_dict(cache_cfg(tmp_path, tiny_data, subset=10))
    a = data.build_data(cfg.data, 0, CPU)
    b = data.build_data(cfg.data, 0, CPU)
    c = data.build_data(cfg.data, 1, CPU)
    assert len(a.train_set) == 10 and len(a.train_loader.targets) == 10
    assert [s for s, _ in a.train_set.samples] == [s for s, _ in b.train_set.samples]
    assert [s for s, _ in a.train_set.samples] != [s for s, _ in c.train_set.samples]


def test_channels_last_auto_means_convolutional_models():
    conv = config.from_dict({"data": {"train": "a", "val": "b"}, "model": {"sequential": [{"Conv2d": [3, 4, 3]}]}})
    mlp = config.from_dict(
        {"data": {"train": "a", "val": "b"}, "model": {"sequential": ["Flatten", {"Linear": [4, 2]}]}}
    )
    assert devices.channels_last(conv, torch.nn.Conv2d(3, 4, 3)) is True
    assert devices.channels_last(mlp, torch.nn.Linear(4, 2)) is False


MALLINFO = """
import ctypes, sys, torch
from trainkit.run import devices

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def step():  # a tensor of 64 MB made and freed, as a training step at 224 px does with an activation
    before = libc.mallinfo2().hblkhd
    x = torch.ones(64 * 2**20, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd - before
    del x
    return mapped, libc.mallinfo2().fordblks

print(*step())
print(devices.keep_freed_memory())
step()
print(*step())
"""


@pytest.mark.skipif(not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6") and not os.path.exists("/lib64/libc.so.6"),
                    reason="glibc only")  # fmt: skip
def test_freed_host_memory_is_kept_for_the_next_step():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", MALLINFO], capture_output=True, text=True, check=True).stdout.split()
    mapped_before, _, kept, mapped_after, free_after = out
    assert int(mapped_before) >= 64 * 2**20  # glibc's default: each such tensor is a fresh mmap, unmapped when freed
    assert kept == "True"
    assert int(mapped_after) == 0  # now it comes from the heap, over mmap's highest threshold (32 MB) too...
    assert int(free_after) >= 64 * 2**20  # ...and stays there, free, for the next step
