"""store.files: the one atomic write. A failed write leaves the previous file and no temporary; a write left
by a killed process is cleaned up by the next; the mode of a private file is its owner's only."""

from __future__ import annotations

import os
import stat

import pytest

from trainkit.store.files import atomic_path, temporary_name, write_atomic, write_text_atomic


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old")
    (tmp_path / ".a.csv.tmp-99999").write_text("left by a killed process")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "predictions.jsonl"
    target.write_text("previous")

    def half_then_fail(f):
        f.write("half")
        raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError, match="disk went away"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


def test_a_temporary_keeps_the_suffix_when_asked_and_a_private_file_is_the_owners(tmp_path):
    assert temporary_name(tmp_path / "m.onnx", keep_suffix=True).name == f".m.onnx.tmp-{os.getpid()}.onnx"
    with atomic_path(tmp_path / "m.pt2", keep_suffix=True) as tmp:
        assert tmp.suffix == ".pt2"
        tmp.write_bytes(b"program")
    assert (tmp_path / "m.pt2").read_bytes() == b"program"
    write_text_atomic(tmp_path / "secret", "s3cret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
