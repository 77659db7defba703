"""metrics.csv (the csv sink, `log.csv: true`): a row per epoch, a column per metric, the same epochs as metrics.jsonl, also
after a resume; and the sinks' table, which made it one module and one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import run_cli, tiny_config, write_yaml

from trainkit.sinks import csv as csv_sink
from trainkit.sinks.table import SINKS, files


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_columns_are_the_union_in_order_and_lists_are_json():
    text = csv_sink.as_csv(
        [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25, "val_acc": 0.9, "lr": [0.1, 0.01]}]
    )
    assert text.splitlines() == ["epoch,train_loss,val_acc,lr", "1,0.5,,", '2,0.25,0.9,"[0.1, 0.01]"']


def test_it_is_off_unless_asked_and_the_table_lists_it_with_its_file(tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", tiny_config(tiny_data, tmp_path / "run", train={"epochs": 1}))
    assert run_cli("train", "--config", str(cfg)).returncode == 0
    assert (tmp_path / "run" / "metrics.jsonl").is_file() and not (tmp_path / "run" / "metrics.csv").exists()
    assert list(SINKS) == ["console", "jsonl", "csv", "visdom", "tensorboard", "mlflow"]
    assert "metrics.csv" in files() and "tb" in files()


def test_a_run_writes_the_epochs_of_metrics_jsonl_and_a_resume_keeps_them_in_step(tmp_path, tiny_data):
    cfg = write_yaml(
        tmp_path / "c.yaml",
        tiny_config(tiny_data, tmp_path / "run", log={"visdom": {"enabled": False}, "report": False, "csv": True}),
    )
    first = run_cli("train", "--config", str(cfg), "--set", "train.epochs=2")
    assert first.returncode == 0, first.stderr
    jsonl = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    table = rows(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in table] == ["1", "2"] == [str(r["epoch"]) for r in jsonl]
    assert list(table[0]) == list(jsonl[0])  # a column per metric, in the order of the record
    assert [float(r["val_loss"]) for r in table] == [r["val_loss"] for r in jsonl]
    assert [float(r["train_loss"]) for r in table] == [r["train_loss"] for r in jsonl]
    again = run_cli("train", "--config", str(cfg), "--resume", "--set", "train.epochs=3")
    assert again.returncode == 0, again.stderr
    assert [r["epoch"] for r in rows(tmp_path / "run" / "metrics.csv")] == ["1", "2", "3"]
    assert not list((tmp_path / "run").glob(".*.tmp-*"))
