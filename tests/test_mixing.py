"""data.batch_transforms: MixUp and CutMix on whole batches, seeded for exact resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, assert_user_error, run_cli, tiny_config, write_yaml

from trainkit.config import specs
from trainkit.data.mixing import BatchMix
from trainkit.errors import ConfigError


def calls(*raw) -> list[specs.Call]:
    names = specs.transforms()
    return [specs.parse_call(r, f"data.batch_transforms[{i}]", names, "batch transform") for i, r in enumerate(raw)]


def test_mixed_targets_sum_to_one_and_repeat_exactly():
    mix = BatchMix(calls({"MixUp": {"alpha": 0.2}}, {"CutMix": {"alpha": 1.0}}), 5, seed=3, loss="CrossEntropyLoss")
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 5, (16,))
    before = torch.random.get_rng_state()
    seen = set()
    for index in range(20):
        mixed, soft, labels = mix(x, y, epoch=2, index=index)
        assert soft.shape == (16, 5) and torch.allclose(soft.sum(dim=1), torch.ones(16))
        assert torch.equal(labels, soft.argmax(dim=1))
        again = mix(x, y, epoch=2, index=index)
        assert torch.equal(mixed, again[0]) and torch.equal(soft, again[1])  # a resumed run mixes the same
        # CutMix pastes a box: some pixels are exactly one image's; MixUp blends every pixel
        seen.add("cutmix" if (mixed == x).any() or (mixed == x.roll(1, 0)).any() else "mixup")
    assert seen == {"mixup", "cutmix"}  # one chosen at random per batch
    assert not torch.equal(mix(x, y, 2, 0)[0], mix(x, y, 3, 0)[0])  # another epoch, another mix
    assert torch.equal(torch.random.get_rng_state(), before)  # the training's own random stream is untouched
    plain = BatchMix([], 5, 0, "CrossEntropyLoss")
    assert plain(x, y, 0, 0)[1] is y
    with pytest.raises(ConfigError, match="soft targets"):
        BatchMix(calls("MixUp"), 5, 0, "NLLLoss")


def test_a_batch_transform_among_the_per_image_transforms_is_one_line(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path / "run")
    cfg["data"]["transforms"]["train"] = ["ToTensor", {"CutMix": {"alpha": 1.0}}]
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)), "--print-config")
    assert_user_error(proc, "data.transforms.train[1]", "CutMix", "data.batch_transforms")
    cfg["data"]["transforms"]["train"] = ["ToTensor"]
    cfg["data"]["batch_transforms"] = [{"CutMix": {"alpha": 1.0}}]
    ok = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.slow
def test_cutmix_on_the_digits_still_reaches_95_percent(tmp_path):
    data = tmp_path / "digits"
    subprocess.run([sys.executable, "-m", "trainkit.data.digits", str(data)], check=True, capture_output=True)
    sets = [
        f"data.train={data / 'train'}",
        f"data.val={data / 'val'}",
        f"run_dir={tmp_path / 'run'}",
        "data.batch_transforms=[{CutMix: {alpha: 1.0}}]",
        "log.report=false",
    ]
    args = ["--config", str(ROOT / "configs" / "digits.yaml"), *[a for s in sets for a in ("--set", s)]]
    proc = run_cli("train", *args)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(r["val_acc"] for r in records)
    print(f"digits with CutMix: best val accuracy {best:.4f}")
    assert best >= 0.95
