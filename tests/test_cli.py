"""cli: the real `trainkit` command in a process of its own: help, version, exit codes, one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, assert_user_error, forked_runs, free_port, run_cli, tiny_config, write_yaml

import trainkit
from trainkit.cli import main


def test_version_and_console_script():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"trainkit {trainkit.__version__}"
    script = shutil.which("trainkit", path=str(ROOT / ".venv" / "bin")) or shutil.which("trainkit")
    assert script, "the console script `trainkit` is installed"
    out = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and trainkit.__version__ in out.stdout


@pytest.mark.parametrize("command", ["train", "eval", "inspect-shapes", "visdom", "plot"])
def test_each_subcommand_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"trainkit {command}" in out


def test_print_config_prints_yaml_that_loads_back(tmp_path):
    proc = run_cli("train", "--config", "configs/cifar10.yaml", "--print-config", "--set", "data.batch_size=32")
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["data"]["batch_size"] == 32
    assert resolved["data"]["sampler"]["type"] == "random"  # defaults filled in
    again = tmp_path / "again.yaml"
    again.write_text(proc.stdout)
    proc2 = run_cli("train", "--config", str(again), "--print-config")
    assert proc2.returncode == 0 and proc2.stdout == proc.stdout


def test_config_errors_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: a, val: b, batchsize: 3}\nmodel: {sequential: [Flatten]}\n")
    assert_user_error(
        run_cli("train", "--config", str(bad)), "bad.yaml:1", "data.batchsize", "did you mean 'batch_size'"
    )
    assert_user_error(
        run_cli("train", "--config", "configs/cifar10.yaml", "--set", "data.batch_size"), "expected KEY=VALUE"
    )
    assert_user_error(run_cli("train", "--config", str(tmp_path / "missing.yaml")), "config file not found")


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli("train", "--config", str(tmp_path / "missing.yaml"), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_main_is_callable_in_process(capsys):
    assert main(["train", "--config", "configs/cifar10.yaml", "--print-config"]) == 0
    assert "cifar10-cnn" in capsys.readouterr().out
    assert main(["eval", "--ckpt", "does/not/exist.pt"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
def test_the_tests_forked_command_is_the_fresh_one(tmp_path):
    """run_cli forks its commands from a process that has imported torch (forked_cli.py): the same outputs and
    exit codes as `python -m trainkit` in a fresh interpreter, a command that outlives its timeout killed."""
    bad = write_yaml(tmp_path / "bad.yaml", {"data": {"train": "a", "val": "b"}, "model": {"sequential": ["Flaten"]}})
    for args in (["train", "--config", str(bad)], ["eval", "--ckpt", "no.pt", "--debug"]):
        before = forked_runs()
        forked = run_cli(*args, cwd=tmp_path)
        assert forked_runs() == before + 1  # in the tests' environment: forked, not started afresh
        fresh = subprocess.run([sys.executable, "-m", "trainkit", *args], capture_output=True, text=True, cwd=tmp_path)
        assert forked.args == fresh.args and forked.returncode == fresh.returncode > -1, (forked, fresh)
        assert forked.stdout == fresh.stdout and forked.stderr == fresh.stderr
    with pytest.raises(subprocess.TimeoutExpired):  # the visdom server serves until stopped
        run_cli("visdom", "--port", str(free_port()), "--env-path", str(tmp_path / "envs"), "--no-login", timeout=3)


def test_python_dash_m_works():
    proc = subprocess.run([sys.executable, "-m", "trainkit", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "inspect-shapes" in proc.stdout


def test_a_reader_that_goes_away_ends_quietly(tmp_path, tiny_data):
    """`trainkit eval ... | head`: when the pipe's reader has gone, exit 141 (SIGPIPE) without a traceback."""
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run", train={"epochs": 1}))
    assert run_cli("train", "--config", str(cfg)).returncode == 0
    args = ["eval", "--ckpt", str(tmp_path / "run" / "last.pt")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def test_the_command_table_builds_every_parser_with_its_examples_and_imports_no_torch():
    """`trainkit --help` stays fast: the command modules import what they need only when they run."""
    code = (
        "import sys\n"
        "from trainkit.cli import COMMANDS, build_parser\n"
        "parser = build_parser()\n"
        "for name in COMMANDS:\n"
        "    sub = parser._subparsers._group_actions[0].choices[name]\n"
        "    assert 'examples:' in sub.epilog and f'trainkit {name}' in sub.epilog, name\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'yaml') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
