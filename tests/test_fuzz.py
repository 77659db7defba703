"""Property-based tests: whatever the input, the config loader and `--set` raise only ConfigError."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainkit import config, schema
from trainkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "configs" / "cifar10.yaml").read_text())
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["SGD", "Conv2d", "ToTensor", "balanced", "weighted", "random", "zeros"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def outcome(load) -> str:
    """'config' or 'error'; any other exception fails the test. An error is one non-empty line."""
    try:
        cfg = load()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return "error"
    assert isinstance(cfg, schema.Config)
    return "config"


def load_text(text: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8")
        return outcome(lambda: config.load_config(path))


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_a_config_error(text):
    assert load_text(text) in ("config", "error")


@FUZZ
@given(values)
def test_any_yaml_document_is_a_config_or_a_config_error(doc):
    assert load_text(yaml.safe_dump(doc)) in ("config", "error")


def key_paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from key_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from key_paths(v, (*prefix, i))


PATHS = list(key_paths(BASE))


@FUZZ
@given(st.sampled_from(PATHS), values)
def test_any_value_anywhere_in_a_valid_config_is_validated(path, value):
    doc = copy.deepcopy(BASE)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert outcome(lambda: config.from_dict(doc)) in ("config", "error")


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=3))
def test_any_set_item_is_applied_or_a_config_error(items):
    assert outcome(lambda: config.load_config(ROOT / "configs" / "cifar10.yaml", items)) in ("config", "error")


@FUZZ
@given(st.sampled_from([".".join(map(str, p)) for p in PATHS if all(isinstance(k, str) for k in p)]), values)
def test_set_of_any_known_key_to_any_value_is_validated(key, value):
    item = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
    assert outcome(lambda: config.load_config(ROOT / "configs" / "cifar10.yaml", [item])) in ("config", "error")
