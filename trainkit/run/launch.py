"""`trainkit train --nproc N`: run trainkit under torchrun, and end the way a single process would.

Every rank leaves its exit code in a status folder, so the launcher returns the run's own code (0, 1, 2,
130 or 143) rather than torchrun's summary. The launcher also reads the processes' stderr: a user error
(`trainkit: error: ...`) is shown once, however many ranks hit it, and what follows a failure on one
rank (the other ranks' broken-connection tracebacks, torchrun's report) is shown only when no rank
said what went wrong, i.e. when it is a bug.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

STATUS_ENV = "TRAINKIT_STATUS_DIR"  # where each rank leaves its exit code for the launcher
USER_ERROR = "trainkit: error:"
# torchrun's start-up banner, its log lines (W1126 12:00:00.000 ...) and a rank's uncaught exception ([rank1]: ...);
# after an error log line or an exception, everything but a user error is part of the failure's cascade
_NOISE = re.compile(r"^(\*+\s*$|Setting OMP_NUM_THREADS|[WEIF]\d{4} \d\d:\d\d:\d\d|\[rank\d+\]:)")
_FAILURE = re.compile(r"^([EF]\d{4} \d\d:\d\d:\d\d|\[rank\d+\]:)")
TERMINAL_ENV = "TRAINKIT_TERMINAL_COLUMNS"  # the launcher's terminal, for rank 0's progress bar


PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies: a launcher killed with -9 (or an OOM kill
    of torchrun) takes its ranks with it, so no orphan goes on training and writing into the run directory."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def check_nproc(nproc: int) -> None:
    """One process per GPU, else per CPU core: more only oversubscribe the machine (or exhaust its memory)."""
    import torch

    from trainkit.errors import ConfigError

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    limit, what = (gpus, "GPUs") if gpus else (os.cpu_count() or 1, "CPU cores")
    if nproc > limit:
        raise ConfigError(
            f"--nproc {nproc}: this machine has {limit} {what}, one process each at most; for more machines, run "
            "torchrun on each (see the README's DDP section)"
        )


def write_status(code: int) -> None:
    """Under the --nproc launcher, record this rank's exit code."""
    folder = os.environ.get(STATUS_ENV)
    if folder:
        (Path(folder) / os.environ.get("RANK", "0")).write_text(str(code))


def run_code(codes: dict[int, int], torchrun_code: int) -> int:
    """The run's exit code from the ranks' own codes: a signal stop, else a user error, else rank 0's."""
    if codes.get(0) in (130, 143):
        return codes[0]
    if 2 in codes.values():
        return 2
    return codes.get(0, torchrun_code)


class StderrFilter:
    """Passes the processes' stderr through, holding back the cascade that follows a failure.

    It works on segments ended by a newline or a carriage return, so a tqdm bar still draws (one update late).
    """

    def __init__(self, out: Any) -> None:
        self.out = out
        self.held: list[str] = []
        self.errors: list[str] = []
        self.pending = ""
        self.failing = False  # a rank has failed: what follows is its cascade
        self.started = False  # something was shown (blank lines before that are torchrun's banner)

    def feed(self, text: str) -> None:
        self.pending += text
        for segment in re.findall(r"[^\r\n]*[\r\n]", self.pending):
            self.segment(segment)
        self.pending = re.sub(r"^(?:[^\r\n]*[\r\n])*", "", self.pending)

    def segment(self, text: str) -> None:
        if text.startswith(USER_ERROR):
            if text not in self.errors:  # every rank may hit the same bad input
                self.errors.append(text)
                self.write(text)
        elif self.failing or _NOISE.match(text) or (text == "\n" and not self.started):
            self.failing = self.failing or bool(_FAILURE.match(text))
            self.held.append(text)
        else:
            self.write(text)  # progress, warnings and anything else, live

    def write(self, text: str) -> None:
        self.started = True
        self.out.write(text)
        self.out.flush()

    def finish(self, code: int) -> None:
        """After the run: a failure that no rank explained is a bug, so show everything held back."""
        if self.pending:
            self.segment(self.pending)
            self.pending = ""
        if code not in (0, 130, 143) and not self.errors:
            self.out.writelines(self.held)
            self.out.flush()


def launch(nproc: int, argv: list[str]) -> int:
    """Run `trainkit` under torchrun with `nproc` processes; returns the run's exit code.

    SIGINT and SIGTERM are passed on to torchrun, which passes them to every process.
    """
    with tempfile.TemporaryDirectory(prefix="trainkit-launch-") as status:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += ["-m", "trainkit", *argv]
        env = {**os.environ, STATUS_ENV: status}
        with contextlib.suppress(OSError, ValueError):  # rank 0's stderr is a pipe to here: pass on the terminal
            env[TERMINAL_ENV] = str(os.get_terminal_size(sys.stderr.fileno()).columns)
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        filt = StderrFilter(sys.stderr)

        def read() -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            assert proc.stderr is not None
            while chunk := os.read(proc.stderr.fileno(), 65536):
                filt.feed(decoder.decode(chunk))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def forward(signum: int, frame: Any) -> None:
            proc.send_signal(signum)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            torchrun_code = proc.wait()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        reader.join()
        codes = {int(p.name): int(p.read_text()) for p in Path(status).iterdir() if p.read_text().strip()}
        code = run_code(codes, torchrun_code)
        filt.finish(code)
        return code
