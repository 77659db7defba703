"""launch: the --nproc launcher's exit code and what it lets through of the processes' stderr.

The end-to-end runs (2 real processes under torchrun) are in test_distributed.py; these feed the
filter the text torchrun and its workers really print.
"""

from __future__ import annotations

import io

from trainkit.run.launch import StderrFilter, run_code

BANNER = (
    "\n*****************************************\n"
    "Setting OMP_NUM_THREADS environment variable for each process to be 1 in default, to avoid ...\n"
    "*****************************************\n"
)
CASCADE = (
    "[rank0]: Traceback (most recent call last):\n"
    "[rank0]: RuntimeError: [pair.cc:561] Connection closed by peer [127.0.0.1]:57560.\n"
    "E1126 17:44:58.678000 8227 api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 8233)\n"
    "Traceback (most recent call last):\n"
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
    "trainkit FAILED\n"
)
ERROR = "trainkit: error: cannot decode image data/train/cat/001.png (...); remove or replace the file\n"


def run(*chunks: str, code: int) -> str:
    out = io.StringIO()
    f = StderrFilter(out)
    for chunk in chunks:
        f.feed(chunk)
    f.finish(code)
    return out.getvalue()


def test_a_clean_run_shows_no_banner_but_keeps_warnings():
    warning = "warning: no visdom server at http://localhost:8097; plots are off\n"
    assert run(BANNER, warning, code=0) == warning


def test_a_user_error_is_shown_once_and_the_cascade_is_not():
    assert run(BANNER, ERROR, CASCADE[:50], CASCADE[50:], ERROR, code=2) == ERROR


def test_a_failure_nobody_explained_is_a_bug_and_shows_everything():
    shown = run(BANNER, CASCADE, code=1)
    assert "Connection closed by peer" in shown and "ChildFailedError" in shown


def test_a_stop_by_signal_shows_nothing_of_torchrun():
    torchrun = "W1126 17:00:00.000000 1 api.py:1028] Received Signals.SIGTERM death signal, shutting down workers\n"
    assert run(BANNER, torchrun, code=143) == ""


def test_a_progress_bar_passes_at_each_carriage_return():
    out = io.StringIO()
    f = StderrFilter(out)
    f.feed("\repoch 1/2:  25%|##  | 1/4")
    f.feed("\repoch 1/2:  50%|#### | 2/4")
    assert out.getvalue() == "\repoch 1/2:  25%|##  | 1/4\r"  # drawn before any newline arrives


def test_the_run_code_is_the_ranks_own():
    assert run_code({0: 0, 1: 0}, 0) == 0
    assert run_code({1: 2}, 1) == 2  # rank 1 met bad input; rank 0 died of the broken connection
    assert run_code({0: 143, 1: 143}, 1) == 143
    assert run_code({}, 1) == 1  # no rank got to say: torchrun's code
