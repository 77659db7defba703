"""config: strict YAML loading, overrides, error messages, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainkit.errors import ConfigError
from trainkit.run import config
from trainkit.run.config import Config

ROOT = Path(__file__).resolve().parents[1]


def load_text(tmp_path: Path, text: str, overrides=()) -> Config:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return config.load_config(path, overrides)


BASE = """
data: {train: a, val: b}
model:
  sequential: [Flatten, {Linear: [12, 2]}]
"""


def test_contract_example_loads_as_written():
    cfg = config.load_config(ROOT / "configs" / "cifar10.yaml")
    assert cfg.name == "cifar10-cnn" and cfg.device == "auto"
    assert cfg.data.batch_size == 128 and cfg.data.sampler.type == "random"
    assert [c.name for c in cfg.data.transforms.train_calls] == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
    ]
    assert cfg.model.init["Linear"].calls["weight"].name == "normal"
    assert cfg.model.init["Linear"].calls["weight"].kwargs == {"std": 0.01}
    assert cfg.optim.type == "SGD" and cfg.optim.kwargs == {"momentum": 0.9, "nesterov": True, "weight_decay": 5.0e-4}
    assert cfg.scheduler.type == "CosineAnnealingLR" and cfg.scheduler.kwargs == {"T_max": 10}
    assert cfg.train.loss.kwargs == {"label_smoothing": 0.0}
    assert cfg.log.visdom.enabled is True and cfg.log.visdom.port == 8097


def test_other_accepted_forms(tmp_path):
    cfg = load_text(
        tmp_path,
        """
data:
  train: a
  val: b
  sampler: {type: weighted, class_weights: {cat: 2.0, dog: 1.0}, num_samples: 5000, replacement: true}
model:
  moduledict:
    body: {sequential: {conv: {Conv2d: [3, 8, 3]}, act: ReLU}}
    pool: {AdaptiveAvgPool2d: 1}
    flat: Flatten
    head: {Linear: {in_features: 8, out_features: 2}}
  forward: [body, pool, flat, head]
""",
    )
    assert cfg.data.sampler.class_weights == {"cat": 2.0, "dog": 1.0}
    assert cfg.data.sampler.num_samples == 5000
    assert cfg.model.net.forward == ["body", "pool", "flat", "head"]
    tv = load_text(tmp_path, "data: {train: a, val: b}\nmodel: {torchvision: resnet18, args: {num_classes: 10}}\n")
    assert tv.model.torchvision == "resnet18" and tv.model.args == {"num_classes": 10}


def test_unknown_key_names_path_line_and_suggestion(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, BASE + "train:\n  epochs: 3\n  lerning_rate: 0.1\n")
    msg = str(exc.value)
    assert "train.lerning_rate: unknown key" in msg
    assert "cfg.yaml:7: " in msg  # BASE starts with a blank line
    with pytest.raises(ConfigError, match=r"data\.batchsize: unknown key; did you mean 'batch_size'"):
        load_text(tmp_path, "data: {train: a, val: b, batchsize: 3}\nmodel: {sequential: [Flatten]}\n")


def test_wrong_type_names_expected_and_given(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, BASE + "  \ntrain: {epochs: ten}\n")
    assert "train.epochs: expected an integer, got 'ten' (str)" in str(exc.value)
    with pytest.raises(ConfigError, match=r"data\.sampler\.type: expected one of 'random', 'sequential', 'weighted'"):
        load_text(tmp_path, "data: {train: a, val: b, sampler: shuffled}\nmodel: {sequential: [Flatten]}\n")
    with pytest.raises(ConfigError, match=r"train\.amp: expected one of 'off', 'bf16', 'fp16', got True"):
        load_text(tmp_path, BASE + "train: {amp: true}\n")
    assert load_text(tmp_path, BASE + "train: {amp: off}\nlog: {progress: off}\n").train.amp == "off"  # YAML's `off`
    with pytest.raises(ConfigError, match=r"data\.batch_size: must be a positive integer, got 0"):
        load_text(tmp_path, "data: {train: a, val: b, batch_size: 0}\nmodel: {sequential: [Flatten]}\n")


def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path):
    """YAML 1.1 reads `1e-3` as a string; the way people write learning rates must just work."""
    cfg = load_text(tmp_path, BASE + "optim: {type: AdamW, lr: 1e-3, weight_decay: 5E-2}\n", ["optim.eps=1e-8"])
    assert cfg.optim.lr == 0.001 and cfg.optim.kwargs == {"weight_decay": 0.05, "eps": 1e-8}
    assert load_text(tmp_path, BASE + "name: '1e3'\n").name == "1e3"  # quoted stays a string
    assert load_text(tmp_path, BASE + "train: {epochs: 10}\n").train.epochs == 10  # integers stay integers


def test_yaml_syntax_error_gives_file_line_and_column(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, "data:\n  train: a\n  val: [b\nmodel: {}\n")
    assert "cfg.yaml:4:" in str(exc.value) and "YAML syntax error" in str(exc.value)


def test_python_tags_are_refused_and_never_run(tmp_path):
    sentinel = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="unsupported tag") as exc:
        load_text(tmp_path, f"name: !!python/object/apply:os.system ['touch {sentinel}']\n")
    assert "cfg.yaml:1:" in str(exc.value)
    assert not sentinel.exists()


def test_alias_bomb_and_deep_nesting_are_refused(tmp_path):
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb.append(f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_text(tmp_path, "\n".join(bomb) + "\n")
    with pytest.raises(ConfigError, match="nesting"):
        load_text(tmp_path, "name: " + "[" * 200 + "]" * 200 + "\n")


def test_set_overrides_parse_yaml_values_and_are_checked(tmp_path):
    cfg = load_text(tmp_path, BASE, ["data.batch_size=64", "optim.betas=[0.9, 0.99]", "optim.type=Adam"])
    assert cfg.data.batch_size == 64
    assert cfg.optim.kwargs["betas"] == [0.9, 0.99]
    cfg = load_text(tmp_path, BASE, ["scheduler.type=StepLR", "scheduler.step_size=3"])
    assert cfg.scheduler.kwargs == {"step_size": 3}
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, BASE, ["data.batch_sise=64"])
    assert "--set data.batch_sise=64" in str(exc.value) and "did you mean 'batch_size'" in str(exc.value)
    with pytest.raises(ConfigError, match=r"--set data.batch_size=x: data.batch_size: expected an integer"):
        load_text(tmp_path, BASE, ["data.batch_size=x"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_text(tmp_path, BASE, ["data.batch_size"])
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_text(tmp_path, BASE, ["optim.betas=[0.9,"])


def test_optimizer_and_scheduler_arguments_are_checked_against_their_signatures(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.momentun: .*did you mean 'momentum'\?"):
        load_text(tmp_path, BASE + "optim: {type: SGD, lr: 0.1, momentun: 0.9}\n")
    with pytest.raises(ConfigError, match=r"optim.type: unknown optimizer 'Adamw'; did you mean 'AdamW'\?"):
        load_text(tmp_path, BASE + "optim: {type: Adamw}\n")
    with pytest.raises(ConfigError, match=r"scheduler.type: unknown scheduler 'CosineAnealingLR'"):
        load_text(tmp_path, BASE + "scheduler: {type: CosineAnealingLR}\n")
    with pytest.raises(ConfigError, match=r"train.loss.type: unknown loss 'CrossEntropy'"):
        load_text(tmp_path, BASE + "train: {loss: {type: CrossEntropy}}\n")


def test_resolved_config_round_trips(tmp_path):
    cfg = config.load_config(ROOT / "configs" / "cifar10.yaml", ["scheduler.T_max=3"])
    text = config.dump_config(cfg)
    again = load_text(tmp_path, text)
    assert config.to_dict(again) == config.to_dict(cfg)
    assert again.run_dir == "runs/cifar10-cnn"


def test_default_run_dir_follows_name(tmp_path):
    cfg = load_text(tmp_path, BASE + "name: exp1\n")
    assert cfg.run_dir == "runs/exp1"
    with pytest.raises(ConfigError, match="device: expected auto, cpu, cuda, cuda:N or mps"):
        load_text(tmp_path, BASE + "device: gpu0\n")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads_and_builds_its_model_and_optimizer(name):
    from trainkit.models import build as models
    from trainkit.models import optim

    cfg = config.load_config(ROOT / "configs" / name)
    model = models.build_model(cfg.model, seed=cfg.seed)
    opt = optim.build_optimizer(model, cfg.optim)  # optim.groups' patterns match this model's names
    in_groups = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert in_groups == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
