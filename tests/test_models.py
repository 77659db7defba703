"""models: spec forms, nesting, forward order, initializers, freeze, replace, starting weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from trainkit.config.train import OptimConfig
from trainkit.errors import CheckpointError, ConfigError
from trainkit.models import build as models
from trainkit.models import optim
from trainkit.models.schema import ModelConfig
from trainkit.run import config
from trainkit.store import checkpoint


def model_cfg(tmp_path: Path, text: str) -> ModelConfig:
    path = tmp_path / "cfg.yaml"
    path.write_text("data: {train: a, val: b}\n" + text)
    return config.load_config(path).model


def build(tmp_path: Path, text: str, seed: int = 0) -> nn.Module:
    """As a run builds it: model.weights read by the store."""
    return models.build_model(model_cfg(tmp_path, text), seed=seed, load_weights=checkpoint.load_weights)


def test_list_builds_sequential_with_every_layer_form(tmp_path):
    m = build(
        tmp_path,
        "model: {sequential: [{Conv2d: [3, 4, 3]}, {ReLU: {inplace: true}}, {Dropout: 0.25}, {Flatten: {}}, Identity]}",
    )
    assert isinstance(m, nn.Sequential) and [type(x).__name__ for x in m] == [
        "Conv2d",
        "ReLU",
        "Dropout",
        "Flatten",
        "Identity",
    ]
    assert m[0].in_channels == 3 and m[0].kernel_size == (3, 3) and m[1].inplace and m[2].p == 0.25


def test_mapping_builds_named_sequential(tmp_path):
    m = build(tmp_path, "model: {sequential: {stem: {Conv2d: [3, 4, 3]}, act: ReLU, head: {Flatten: {}}}}")
    assert list(dict(m.named_children())) == ["stem", "act", "head"]
    assert "stem.weight" in m.state_dict() and "(stem): Conv2d" in str(m)


def test_moduledict_nesting_and_forward_order(tmp_path):
    text = """
model:
  moduledict:
    twice: {sequential: [{Linear: [2, 2, false]}]}
    shift: {moduledict: {inner: {Linear: [2, 2]}}}
    act: ReLU
  forward: [FORWARD]
"""
    m = build(tmp_path, text.replace("FORWARD", "shift, act, twice"))
    assert isinstance(m, nn.ModuleDict) and isinstance(m["twice"], nn.Sequential)
    assert isinstance(m["shift"], nn.ModuleDict) and "shift.inner.weight" in m.state_dict()
    x = torch.randn(5, 2)
    expected = m["twice"](torch.relu(m["shift"]["inner"](x)))
    assert torch.allclose(m(x), expected)
    default = build(tmp_path, text.replace("  forward: [FORWARD]\n", ""))
    assert default.order == ["twice", "shift", "act"]
    with pytest.raises(ConfigError, match=r"model.moduledict.train: this name is taken by an nn.Module attribute"):
        model_cfg(tmp_path, text.replace("twice:", "train:").replace("  forward: [FORWARD]\n", ""))
    with pytest.raises(ConfigError, match=r"model.forward\[1\]: no layer named 'ac' in moduledict; did you mean 'act'"):
        model_cfg(tmp_path, text.replace("FORWARD", "shift, ac"))


def test_torchvision_model_with_args(tmp_path):
    m = build(tmp_path, "model: {torchvision: resnet18, args: {num_classes: 7}}")
    assert m.fc.out_features == 7
    with pytest.raises(ConfigError, match="never downloads weights"):
        model_cfg(tmp_path, "model: {torchvision: resnet18, args: {weights: DEFAULT}}")
    with pytest.raises(ConfigError, match="unknown torchvision model 'resnet81'"):
        model_cfg(tmp_path, "model: {torchvision: resnet81}")


def test_layer_errors_name_the_config_path(tmp_path):
    with pytest.raises(ConfigError, match=r"model.sequential\[1\]: unknown layer 'Relu'; did you mean 'ReLU'"):
        model_cfg(tmp_path, "model: {sequential: [Flatten, Relu]}")
    with pytest.raises(ConfigError, match=r"model.sequential\[0\]: unknown layer 'os.system'"):
        model_cfg(tmp_path, "model: {sequential: [{os.system: [ls]}]}")
    with pytest.raises(ConfigError, match=r"model.sequential\[0\]: .*out_channels"):
        model_cfg(tmp_path, "model: {sequential: [{Conv2d: [3]}]}")  # missing arguments, caught at load
    with pytest.raises(ConfigError, match=r"model.sequential\[1\]: Dropout rejected its arguments: .*between 0 and 1"):
        build(tmp_path, "model: {sequential: [Flatten, {Dropout: [1.5]}]}")
    with pytest.raises(ConfigError, match=r"model.sequential\[0\]: expected a layer as"):
        model_cfg(tmp_path, "model: {sequential: [{Conv2d: [3, 4, 3], ReLU: {}}]}")
    with pytest.raises(ConfigError, match="give exactly one of sequential, moduledict, torchvision, timm or python"):
        model_cfg(tmp_path, "model: {}")


LINEAR = "model: {sequential: [{Linear: [400, 300]}], init: {Linear: {weight: WEIGHT, bias: zeros}}}"


def init_weight(tmp_path: Path, spec: str) -> torch.Tensor:
    m = build(tmp_path, LINEAR.replace("WEIGHT", spec))
    assert torch.equal(m[0].bias, torch.zeros(300))
    return m[0].weight.detach()


@pytest.mark.parametrize(
    "spec,std",
    [
        ("xavier_normal", math.sqrt(2 / 700)),
        ("xavier_uniform", math.sqrt(6 / 700) / math.sqrt(3)),
        ("kaiming_normal", math.sqrt(2 / 400)),
        ("kaiming_uniform", math.sqrt(6 / 400) / math.sqrt(3)),
        ("{normal: {mean: 0.5, std: 0.2}}", 0.2),
        ("{uniform: {a: -0.3, b: 0.1}}", 0.4 / math.sqrt(12)),
        ("{trunc_normal: {std: 1.0, a: -1.0, b: 1.0}}", 0.5396),
    ],
)
def test_random_initializers_match_their_scheme(tmp_path, spec, std):
    w = init_weight(tmp_path, spec)
    assert abs(w.std().item() - std) / std < 0.03, (w.std().item(), std)
    if "uniform" in spec:
        bound = {"xavier_uniform": math.sqrt(6 / 700), "kaiming_uniform": math.sqrt(6 / 400)}.get(spec)
        if bound:
            assert w.abs().max() <= bound
        else:
            assert w.min() >= -0.3 and w.max() <= 0.1 and abs(w.mean().item() + 0.1) < 0.01
    if "trunc" in spec:
        assert w.min() >= -1 and w.max() <= 1
    if "mean: 0.5" in spec:
        assert abs(w.mean().item() - 0.5) < 0.01


def test_exact_initializers(tmp_path):
    assert torch.equal(init_weight(tmp_path, "{constant: {val: 0.7}}"), torch.full((300, 400), 0.7))
    assert torch.equal(init_weight(tmp_path, "zeros"), torch.zeros(300, 400))
    assert torch.equal(init_weight(tmp_path, "ones"), torch.ones(300, 400))
    assert torch.equal(init_weight(tmp_path, "eye"), torch.eye(300, 400))
    w = init_weight(tmp_path, "orthogonal")
    assert torch.allclose(w @ w.T, torch.eye(300), atol=1e-4)
    conv = build(
        tmp_path, "model: {sequential: [{Conv2d: [4, 4, 3, 1, 1]}], init: {Conv2d: {weight: dirac, bias: zeros}}}"
    )
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(conv(x), x, atol=1e-6)  # dirac makes the convolution an identity


def test_initializer_that_does_not_fit_names_the_layer(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"model.init.Linear.weight: dirac cannot initialize 0 \(Linear\) weight of shape \(300, 400\)",
    ):
        init_weight(tmp_path, "dirac")
    with pytest.raises(ConfigError, match=r"model.init.Linear.weight: unknown initializer 'xavier'"):
        init_weight(tmp_path, "xavier")
    with pytest.raises(ConfigError, match=r"model.init.Lineer: unknown layer type; did you mean 'Linear'"):
        model_cfg(tmp_path, "model: {sequential: [Flatten], init: {Lineer: {weight: zeros}}}")


def test_same_seed_same_weights_and_unnamed_types_keep_defaults(tmp_path):
    text = (
        "model: {sequential: [{Conv2d: [3, 4, 3]}, Flatten, {Linear: [4, 2]}], init: {Linear: {weight: xavier_normal}}}"
    )
    a, b, c = build(tmp_path, text), build(tmp_path, text), build(tmp_path, text, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a[2].weight, c[2].weight)
    plain = build(tmp_path, "model: {sequential: [{Conv2d: [3, 4, 3]}, Flatten, {Linear: [4, 2]}]}")
    assert torch.equal(a[0].weight, plain[0].weight)  # Conv2d not named: PyTorch's default init
    assert not torch.equal(a[2].weight, plain[2].weight)


FREEZE = "model: {sequential: {body: {sequential: [{Linear: [4, 8]}, ReLU]}, head: {Linear: [8, 2]}}, freeze: [body]}"


def test_freeze_excludes_parameters_from_grads_and_optimizer(tmp_path):
    cfg = model_cfg(tmp_path, FREEZE)
    m = models.build_model(cfg, seed=0)
    assert [n for n, p in m.named_parameters() if not p.requires_grad] == ["body.0.weight", "body.0.bias"]
    opt = optim.build_optimizer(m, OptimConfig(type="SGD", lr=0.1))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(m.head.weight), id(m.head.bias)}
    m(torch.randn(3, 4)).sum().backward()
    assert m.body[0].weight.grad is None and m.head.weight.grad is not None
    with pytest.raises(ConfigError, match=r"model.freeze\[0\]: no parameter named or under 'bdy'; did you mean 'body'"):
        models.build_model(model_cfg(tmp_path, FREEZE.replace("[body]", "[bdy]")))


def test_replace_and_freeze_is_the_transfer_recipe(tmp_path):
    text = """
model:
  torchvision: resnet18
  replace: {fc: {Linear: [512, 3]}}
  freeze: [conv1, bn1, layer1, layer2, layer3, layer4]
  init: {Linear: {weight: zeros, bias: ones}}
"""
    m = build(tmp_path, text)
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    assert torch.equal(m.fc.bias, torch.ones(3))  # the new head is initialised with model.init
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 512 * 3 + 3
    with pytest.raises(ConfigError, match=r"model.replace.fcc: no submodule named 'fcc'; did you mean 'fc'"):
        build(tmp_path, text.replace("fc:", "fcc:"))


def test_starting_weights_from_a_local_file(tmp_path):
    text = "model: {sequential: [{Linear: [4, 3]}]}"
    donor = build(tmp_path, text, seed=7)
    torch.save(donor.state_dict(), tmp_path / "w.pt")
    m = build(tmp_path, "model: {sequential: [{Linear: [4, 3]}], weights: " + str(tmp_path / "w.pt") + "}")
    assert torch.equal(m[0].weight, donor[0].weight)
    torch.save(build(tmp_path, "model: {sequential: [{Linear: [5, 3]}]}").state_dict(), tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError, match=r"another model: shape mismatches \(checkpoint vs model\): 0.weight \(3, 5\) vs \(3, 4\)"
    ):
        build(tmp_path, "model: {sequential: [{Linear: [4, 3]}], weights: " + str(tmp_path / "other.pt") + "}")
