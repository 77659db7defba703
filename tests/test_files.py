"""store.files: the one atomic write. A failed write leaves the previous file and no temporary; a write left
by a killed process is cleaned up by the next, a running writer's temporary is left alone (another host's
until it is a day old); the mode of a private file is its owner's only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from trainkit.store.files import FOREIGN_STALE_S, HOST, atomic_path, temporary_name, write_atomic, write_text_atomic


def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_write_replaces_the_file_and_removes_what_killed_writers_left(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old")
    dead = _dead_pid()
    (tmp_path / f".a.csv.tmp-{HOST}-{dead}").write_text("left by a killed process")
    (tmp_path / f".a.csv.tmp-{dead}").write_text("left by a killed process of an older trainkit")
    old = tmp_path / f".a.csv.tmp-otherhost-{dead}"
    old.write_text("left on a shared folder by a process of another host, two days ago")
    os.utime(old, (time.time() - 2 * FOREIGN_STALE_S,) * 2)
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_a_write_leaves_a_running_writers_temporary_alone(tmp_path):
    """Two sweep processes wrote one best.yaml: the first one's clean-up removed the second one's temporary,
    whose move then failed (FileNotFoundError). A live process's temporary, or another host's from the last
    day, is now kept; the process's own next write removes it once the process is gone."""
    target = tmp_path / "best.yaml"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".best.yaml.tmp-{HOST}-{writer.pid}"
        live.write_text("half of the other process's best.yaml")
        recent = tmp_path / ".best.yaml.tmp-otherhost-12"
        recent.write_text("another machine's, an hour ago")
        os.utime(recent, (time.time() - 3600,) * 2)
        write_text_atomic(target, "ours")
        assert target.read_text() == "ours" and live.exists() and recent.exists()
    finally:
        writer.kill()
        writer.wait()
    write_text_atomic(target, "ours again")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.yaml.tmp-otherhost-12", "best.yaml"]


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
    assert temporary_name(tmp_path / "m.onnx", keep_suffix=True).name == f".m.onnx.tmp-{HOST}-{os.getpid()}.onnx"
    with atomic_path(tmp_path / "m.pt2", keep_suffix=True) as tmp:
        assert tmp.suffix == ".pt2"
        tmp.write_bytes(b"program")
    assert (tmp_path / "m.pt2").read_bytes() == b"program"
    write_text_atomic(tmp_path / "secret", "s3cret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_two_processes_write_one_file_at_once(tmp_path):
    """The sweep's race, without the sweep: two processes write one file 300 times each, at once."""
    target = tmp_path / "best.yaml"
    code = (
        "import sys\nfrom trainkit.store.files import write_text_atomic\n"
        "for i in range(300):\n    write_text_atomic(sys.argv[1], f'{sys.argv[2]} {i}\\n' * 200)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(target), who], stderr=subprocess.PIPE, text=True)
               for who in ("first", "second")]  # fmt: skip
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [e.strip().splitlines()[-1:] for e in errors]
    assert target.read_text().split("\n")[0].split()[1] == "299"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.yaml"]
