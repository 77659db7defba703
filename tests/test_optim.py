"""optim.groups: parameters with their own learning-rate factor and optimizer settings."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_user_error, run_cli, tiny_config, write_yaml

from trainkit.models import optim
from trainkit.run import config
from trainkit.run import loop as engine
from trainkit.run.build import Run, build_run

NAMED = {
    "sequential": {
        "conv": {"Conv2d": [3, 4, 3, 1, 1]},
        "bn": {"BatchNorm2d": [4]},
        "act": "ReLU",
        "pool": {"AdaptiveAvgPool2d": [1]},
        "flat": "Flatten",
        "head": {"Linear": [4, 2]},
    }
}


def setup_run(tmp_path, tiny_data, optim_cfg, **sections):
    cfg = tiny_config(tiny_data, tmp_path / "run", model=NAMED, optim=optim_cfg, **sections)
    return build_run(config.from_dict(cfg))


def names_of(run: Run, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in run.model.named_parameters() if id(p) in ids}


def test_each_parameter_goes_to_the_first_group_that_matches_it(tmp_path, tiny_data):
    run = setup_run(
        tmp_path,
        tiny_data,
        {
            "type": "SGD",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 0.01,
            "groups": [
                {"params": "bn.*", "lr_scale": 10, "weight_decay": 0.5},
                {"params": ["*.bias", "head.*"], "lr_scale": 0.25, "momentum": 0.5},
            ],
        },
    )
    groups = run.optimizer.param_groups
    assert [names_of(run, g) for g in groups] == [
        {"conv.weight"},  # the rest: decayed weights, then (none left) undecayed biases
        {"bn.weight", "bn.bias"},
        {"conv.bias", "head.weight", "head.bias"},
    ]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 1.0, 0.025])
    assert [g["weight_decay"] for g in groups] == [0.01, 0.5, 0.01]
    assert [g["momentum"] for g in groups] == [0.9, 0.9, 0.5]
    assert optim.current_lr(run.optimizer) == pytest.approx(0.1)


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
@pytest.mark.parametrize(
    "scheduler",
    [
        {"type": "OneCycleLR", "max_lr": 0.4},
        {"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.4, "step_size_up": 3},
        {"type": "CosineAnnealingLR", "T_max": 2, "warmup_epochs": 1},
    ],
    ids=["onecycle", "cyclic", "cosine-warmup"],
)
def test_the_schedule_keeps_each_groups_factor(tmp_path, tiny_data, scheduler):
    run = setup_run(
        tmp_path,
        tiny_data,
        {"type": "SGD", "lr": 0.1, "groups": [{"params": "head.*", "lr_scale": 0.5}]},
        scheduler=scheduler,
    )
    seen = []
    for _ in range(5):
        run.optimizer.step()
        run.scheduler.step()
        base, head = (g["lr"] for g in run.optimizer.param_groups)
        seen.append(base)
        assert head == pytest.approx(0.5 * base)
    assert len(set(seen)) > 1  # the schedule did move


def test_a_group_with_lr_scale_0_and_no_decay_stays_put_through_training(tmp_path, tiny_data):
    run = setup_run(
        tmp_path,
        tiny_data,
        {"type": "SGD", "lr": 0.1, "momentum": 0.9, "groups": [{"params": "conv.*", "lr_scale": 0, "weight_decay": 0}]},
    )
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    engine.train_one_epoch(run, 0)
    after = dict(run.model.named_parameters())
    assert torch.equal(after["conv.weight"], before["conv.weight"])
    assert not torch.equal(after["head.weight"], before["head.weight"])


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        (
            [{"params": "backbone.*"}],
            "optim.groups[0].params: 'backbone.*' matches no trainable parameter left by the groups before it",
        ),
        ([{"params": "*"}, {"params": "head.*"}], "optim.groups[1].params: 'head.*' matches no trainable parameter"),
        ([{"params": "head.*", "lr": 0.5}], "optim.groups[0].lr: give lr_scale (a factor of optim.lr)"),
        ([{"params": "head.*", "momentun": 0.5}], "did you mean 'momentum'?"),
        ([{"lr_scale": 2}], "optim.groups[0].params: give a glob pattern of parameter names"),
    ],
)
def test_a_bad_group_is_one_line_and_exit_2(tmp_path, tiny_data, groups, fragment):
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        model=NAMED,
        optim={"type": "SGD", "lr": 0.1, "groups": groups},
        train={"epochs": 1},
    )
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert_user_error(proc, fragment)
    assert not (tmp_path / "run").exists()


def _lrs(run_dir) -> list[float]:
    import json

    return [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "first, changed",
    [
        ({"type": "OneCycleLR", "max_lr": 0.2}, {}),  # its length comes from train.epochs
        ({"type": "OneCycleLR", "max_lr": 0.2, "warmup_epochs": 1}, {}),
        ({"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.2, "step_size_up": 7}, {"step_size_up": 11}),
        ({"type": "CosineAnnealingLR", "T_max": 3}, {"T_max": 5}),
        ({"type": "LinearLR", "start_factor": 1.0, "end_factor": 0.1, "total_iters": 3}, {"total_iters": 5}),
        ({"type": "PolynomialLR", "total_iters": 3, "power": 2.0}, {"total_iters": 5}),
    ],
    ids=["onecycle", "onecycle-warmup", "cyclic", "cosine", "linear", "polynomial"],
)
def test_a_resume_that_changes_the_schedules_length_rebuilds_it_at_the_runs_step(tmp_path, tiny_data, first, changed):
    def cfg(run_dir, epochs, sched):
        return config.from_dict(tiny_config(tiny_data, run_dir, scheduler=sched, train={"epochs": epochs}))

    engine.fit(build_run(cfg(tmp_path / "a", 3, first)))
    resumed = build_run(cfg(tmp_path / "a", 5, first | changed), resume=str(tmp_path / "a" / "last.pt"))
    assert any("rebuilt for this config (5 epochs)" in note for note in resumed.notes), resumed.notes
    engine.fit(resumed)  # OneCycleLR raised "Tried to step 37 times" here, a traceback mid-run
    engine.fit(build_run(cfg(tmp_path / "b", 5, first | changed)))  # the new schedule from the start
    assert _lrs(tmp_path / "a")[3:] == pytest.approx(_lrs(tmp_path / "b")[3:], rel=1e-9)
    # the same length again: the saved schedule is loaded as it is, nothing is rebuilt
    again = build_run(cfg(tmp_path / "a", 5, first | changed), resume=str(tmp_path / "a" / "last.pt"))
    assert not any("rebuilt" in note for note in again.notes), again.notes


def test_optim_lr_under_one_cycle_is_said_or_used(tmp_path, tiny_data):
    run = setup_run(tmp_path, tiny_data, {"type": "SGD", "lr": 0.01}, scheduler={"type": "OneCycleLR", "max_lr": 0.3})
    assert any(
        "optim.lr 0.01 is not used: OneCycleLR sets the learning rate from scheduler.max_lr" in n for n in run.notes
    )
    run = setup_run(tmp_path, tiny_data, {"type": "SGD", "lr": 0.07}, scheduler={"type": "OneCycleLR"})
    assert run.scheduler.optimizer.param_groups[0]["max_lr"] == pytest.approx(0.07)  # max_lr from optim.lr
    assert not any("is not used" in n for n in run.notes)
