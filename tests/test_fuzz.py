"""Property-based tests: whatever the input, the config loader and `--set` raise only ConfigError."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainkit.errors import ConfigError
from trainkit.run import config
from trainkit.run.config import Config

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
    assert isinstance(cfg, Config)
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


# --------------------------------------------------------------------------- hostile values through the real CLI

HOSTILE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 10**20, 1000000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "x" * 5000, "ünïcødé ✓", "../../evil", "/proc", "!!python/object:os.system", "null"]),
    st.text(max_size=30),
    st.lists(st.integers(-5, 5), max_size=3),
    st.recursive(st.integers(0, 3), lambda c: st.dictionaries(st.text(max_size=4), c, max_size=2), max_leaves=6),
)
KEYS = [
    "seed", "threads", "name", "run_dir", "device",
    "data.batch_size", "data.val_batch_size", "data.num_workers", "data.prefetch_factor", "data.subset",
    "data.cache", "data.cache_size", "data.max_bad_fraction", "data.scan.max_other_files", "data.transforms.train",
    "data.sampler", "model.sequential", "optim.lr", "optim.type", "scheduler", "train.epochs", "train.accumulate",
    "train.log_every", "train.loss.label_smoothing", "train.checkpoint_every", "train.save_top_k", "train.ema",
    "log.visdom.port", "log.visdom.env", "log.progress",
]  # fmt: skip
CLI_FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
MEMORY = 4 * 2**30  # what one command may add to the address space of the process it starts as


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory):
    from conftest import make_image_folder, tiny_config, write_yaml

    root = tmp_path_factory.mktemp("fuzz")
    make_image_folder(root / "data" / "train", {"cat": 6, "dog": 6}, seed=1)
    make_image_folder(root / "data" / "val", {"cat": 3, "dog": 3}, seed=2)
    cfg = write_yaml(root / "c.yaml", tiny_config(root / "data", root / "run", train={"epochs": 1}))
    (root / "cwd").mkdir()
    return root, cfg


@pytest.mark.slow
@CLI_FUZZ
@given(st.sampled_from(KEYS), HOSTILE)
def test_hostile_set_values_end_in_an_exit_code_never_a_traceback(fuzz_world, key, value):
    from conftest import run_cli

    root, cfg = fuzz_world
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()
    for command in (["--print-config"], ["--fast-dev-run"]):
        proc = run_cli("train", "--config", str(cfg), "--set", f"{key}={text}", *command, cwd=root / "cwd", timeout=120, memory=MEMORY)  # fmt: skip
        assert proc.returncode in (0, 1, 2), (key, text[:200], proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (key, text[:200], proc.stderr[-3000:])
        if proc.returncode == 2:
            assert len(proc.stderr.strip().splitlines()) >= 1
    assert not any((root / "cwd").iterdir()), list((root / "cwd").iterdir())  # nothing outside its temporary folder
    assert not (root / "run").exists()
