"""The tests' `trainkit` commands, each a process forked from one that has already imported torch.

A `python -m trainkit ...` on this 2-core machine spends about 3.5 of its 4 seconds importing torch and
torchvision, and the suite runs a few hundred of them. As multiprocessing's forkserver does, a server
process (run as `python forked_cli.py`, one per test process) imports those two once and forks a child
for each command. The child then does what `python -m trainkit` does after start-up: it takes the
command's working directory, argv (runpy, `sys.path[0]` the working directory) and its own stdin (empty),
stdout and stderr (files), imports trainkit, and exits through `sys.exit(main())` with the usual
interpreter shutdown, made shorter by `gc.freeze()` in the server (1.2 s of sweeping torch's objects at
exit becomes 0.3 s). It is a real process with its own pid and exit status: a test can time it out, and the server
reports a death by signal as subprocess does (a negative return code).

What a fork cannot give: what Python, tempfile and torch read from the environment at start-up and at
import (PYTHON*, TMPDIR, OMP_NUM_THREADS, TORCH_*, ...) was read with the server's environment. A command
whose environment differs from the server's in such a variable (`same_startup_env`) therefore runs in a
fresh interpreter, as do the tests that need one for other reasons (signals to a running command, the
console script, torchrun); any other variable reaches the child as it would a fresh process.

Protocol, one command at a time: the client writes one JSON line (args, cwd, env, stdout and stderr
file paths)
to the server's stdin; the server answers with the child's pid on one line, then, once the child has
ended, its return code on another.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become `python -m trainkit ARGS` in request['cwd'] with request['env']."""
    import runpy

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        f = os.open(path, flags, 0o600)
        os.dup2(f, fd)
        os.close(f)
    os.close(request["replies_fd"])
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (lives as long as the process)
    if request.get("memory"):  # a bound on what the command may add to the memory it starts with
        import resource

        with open("/proc/self/status", encoding="ascii") as status:
            vm = next(int(ln.split()[1]) * 1024 for ln in status if ln.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + int(request["memory"]), resource.RLIM_INFINITY))
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = os.getcwd()  # as `python -m` sets it
    runpy.run_module("trainkit", run_name="__main__", alter_sys=True)  # ends in sys.exit(main())


def serve() -> None:
    """The server: import torch and torchvision once, then fork one child per request line on stdin."""
    import torch  # noqa: F401  (the import every command would otherwise pay for)
    from torchvision.transforms import v2  # noqa: F401

    gc.freeze()  # as the gc docs advise before fork(): the children neither copy nor, at exit, sweep these objects
    replies_fd = os.dup(1)  # the protocol's own copy of stdout: the children's fd 1 are their own files
    for line in sys.stdin:
        request = {**json.loads(line), "replies_fd": replies_fd}
        pid = os.fork()
        if pid == 0:
            _child(request)  # raises SystemExit with the command's exit code: the normal shutdown follows
            os._exit(0)  # not reached
        os.write(replies_fd, f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(replies_fd, f"{os.waitstatus_to_exitcode(status)}\n".encode())


class ForkedCli:
    """The client: a server started on first use; `run` is `subprocess.run([python, -m, trainkit, *args])`."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc: subprocess.Popen | None = None
        self.env = env  # the server's environment
        self.tmp = Path(tempfile.mkdtemp(prefix="trainkit-forked-cli-"))
        self.pending = b""
        self.runs = 0  # commands run so far
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()  # the server ends at the end of its input
            self.proc.wait(30)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _server(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.env,
            )
            self.pending = b""
        return self.proc

    def _line(self, deadline: float | None) -> str | None:
        """The server's next reply line; None at the deadline."""
        proc = self._server()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self.pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], wait)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the forked-CLI server ended (return code {proc.wait()})")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def run(
        self, args: list[str], cwd: Path, env: dict[str, str], timeout: float, memory: int | None = None
    ) -> subprocess.CompletedProcess:
        """`python -m trainkit ARGS` in `cwd` with `env` (whose start-up variables are the server's); `memory`:
        bytes of address space the command may add to the server's (RLIMIT_AS), past which it fails."""
        assert same_startup_env(env, self.env)
        proc = self._server()
        assert proc.stdin is not None
        out, err = self.tmp / "stdout", self.tmp / "stderr"
        request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err), "memory": memory}
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.flush()
        self.runs += 1
        pid = int(self._line(None) or 0)
        deadline = time.monotonic() + timeout
        code = self._line(deadline)
        cmd = [sys.executable, "-m", "trainkit", *args]
        if code is None:  # as subprocess.run: kill it, then raise
            with contextlib.suppress(ProcessLookupError):  # it may have ended just now
                os.kill(pid, signal.SIGKILL)
            self._line(None)
            raise subprocess.TimeoutExpired(cmd, timeout, output=_read(out), stderr=_read(err))
        return subprocess.CompletedProcess(cmd, int(code), _read(out), _read(err))


STARTUP = ("PYTHON", "TMP", "TEMP", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS", "LD_", "CUDA", "TORCH_", "HOME")


def same_startup_env(a: dict[str, str], b: dict[str, str]) -> bool:
    """Whether the variables read at start-up or import (names starting with one of STARTUP) are the same."""

    def startup(env: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items() if k.startswith(STARTUP)}

    return startup(a) == startup(b)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


if __name__ == "__main__":
    serve()
