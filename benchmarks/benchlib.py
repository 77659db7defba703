"""The machinery of `make bench` (benchmarks/bench.py and its sections): worker processes that answer timed
windows, the parent that interleaves and isolates them (SIGSTOP of the others' process groups), what each
window cost its process, the speed probe that says how fast the host ran each vCPU during a window, the
retries of a repetition outside the others' range, and the self-check.

Why the probe. On the 2-vCPU VM this was written on, the host runs each vCPU at one of two speeds, switching
every 0.25 to 15 s, the two vCPUs independently, with nothing else running in the guest (measured with a fixed
loop pinned to each vCPU for 120 s: fast 44% and 58% of the time). It is the core's other hardware thread on
the host, not the clock: in the slow stretches a pure-Python loop takes 2.0 times as long, a small convolution
and a JPEG decode with resize 1.4 times, and SHA-256 (its own unit) 1.06 times. A window of seconds lands on
a random mix, so its images/s moved by up to 50% between repetitions, and the chance that both vCPUs stay fast
through a 4 s window was 1%: neither retries nor waiting for a fast moment can make repetitions agree. So a
probe process samples each vCPU's speed ten times a second with a small convolution (the work the approaches
do), and each window's seconds are also given at full speed: seconds times the window's mean speed over both
vCPUs (1 when both ran fast throughout). The spread, the retries and the medians use these; the raw seconds
and the raw ratios are reported beside them."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench.py"  # the worker processes run it with --worker KIND
PROBE_EVERY = 0.1  # seconds between two samples of the vCPUs' speed
SPREAD_LIMIT = 0.15  # a repetition-to-repetition spread above this: the numbers are not to be believed
WARMUPS = 2  # untimed rounds of every approach before the timed ones (one left (a) settling at 224 px)
RETRIES = 3  # times a repetition outside the others' range is measured again before the spread counts
NAMES = {"a": "idiomatic", "b": "ceiling", "c": "trainkit"}


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack the CIFAR-10 JPEGs once; later runs reuse them."""
    marker = dest / ".complete"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(dest, filter="data")
        marker.write_text(str(tarball))
    return dest


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def serve(make: Callable[..., tuple[Any, dict]], data: Path, steps: int, device_name: str) -> None:
    """A worker process: set up with `make(data, steps, device)`, then answer `run N` with the seconds N steps
    took (`WHAT N` calls the run's attribute WHAT instead, `data` for the data path alone; what it returns is
    added to the answer)."""
    import torch

    from trainkit.run.launch import die_with_parent

    die_with_parent()  # a parent that dies leaves no stopped worker behind
    device = torch.device(device_name)
    start = time.perf_counter()
    run, info = make(data, steps, device)
    print(json.dumps({"ready": time.perf_counter() - start, **info}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            return
        n = int(cmd[1])
        sync(device)
        spin, mhz = spin_ms(), cpu_mhz()
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()  # CLOCK_MONOTONIC: the probe's samples share it
        extra = (run if cmd[0] == "run" else getattr(run, "data_only" if cmd[0] == "data" else cmd[0]))(n) or {}
        sync(device)
        seconds = time.perf_counter() - t0
        stats = window_stats(before, mhz) | {"start": t0, "spin_ms_before": spin, "spin_ms_after": spin_ms()}
        print(json.dumps({"seconds": seconds, "steps": n, **stats, **extra}), flush=True)


def spin_ms() -> float:
    """The best of 3 times of a fixed pure-Python loop, in ms: the speed of the core this process gets right now.
    A VM's /proc/cpuinfo gives one clock whatever the host does; this moves when the host slows the vCPU."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(200_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def probe_main() -> None:
    """The speed probe (`python benchlib.py`): for ever, on each vCPU in turn, the best of 2 times of a small
    convolution on one thread, printed as `TIME CPU MS` (TIME from perf_counter), then a sleep of PROBE_EVERY.
    It runs SCHED_FIFO where allowed, so a busy vCPU runs it at once and does not preempt it mid-sample; it
    takes about 1% of the machine, the same for every approach."""
    import torch

    from trainkit.run.launch import die_with_parent

    die_with_parent()
    torch.set_num_threads(1)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    x, w = torch.randn(4, 16, 32, 32), torch.randn(16, 16, 3, 3)
    cpus = sorted(os.sched_getaffinity(0))
    while True:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            best = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                torch.nn.functional.conv2d(x, w, padding=1)
                best = min(best, time.perf_counter() - t0)
            print(f"{time.perf_counter():.4f} {cpu} {best * 1000:.4f}", flush=True)
        time.sleep(PROBE_EVERY)


class SpeedProbe:
    """The probe process and its samples, read as they come."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self.best: dict[int, float] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t, cpu, ms = line.split()
            self.samples.setdefault(int(cpu), []).append((float(t), float(ms)))
            self.best[int(cpu)] = min(self.best.get(int(cpu), float("inf")), float(ms))

    def speed(self, t0: float, t1: float) -> float:
        """The vCPUs' mean speed over [t0, t1] as a fraction of the fastest sample seen of each (1: both ran
        at full speed throughout); 1.0 where the probe has no sample of the window."""
        time.sleep(2 * PROBE_EVERY)  # the window's last samples
        means = []
        for cpu, samples in list(self.samples.items()):
            inside = [self.best[cpu] / ms for t, ms in samples if t0 <= t <= t1]
            if inside:
                means.append(sum(inside) / len(inside))
        return sum(means) / len(means) if means else 1.0

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_PROBE: list[SpeedProbe] = []


def probe() -> SpeedProbe:
    """The one probe of this benchmark, started on first use and killed when the benchmark exits."""
    if not _PROBE:
        _PROBE.append(SpeedProbe())
        atexit.register(_PROBE[0].close)
    return _PROBE[0]


def cpu_mhz() -> float:
    """The mean clock of the CPUs as /proc/cpuinfo says it now (0 where it says nothing)."""
    try:
        mhz = [float(ln.split(":")[1]) for ln in Path("/proc/cpuinfo").read_text().splitlines() if "MHz" in ln]
    except (OSError, ValueError, IndexError):
        return 0.0
    return sum(mhz) / len(mhz) if mhz else 0.0


def window_stats(before, mhz_before: float) -> dict[str, float]:
    """What a window cost this process besides its wall time, to tell why one ran slow: page faults (the
    allocator handing memory back and faulting it in again), context switches (involuntary: preempted),
    CPU seconds, and the CPU clock before and after."""
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "major_faults": after.ru_majflt - before.ru_majflt,
        "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw,
        "voluntary_switches": after.ru_nvcsw - before.ru_nvcsw,
        "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "mhz_before": mhz_before,
        "mhz_after": cpu_mhz(),
    }


def tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests so far (the `steal` column of /proc/stat), all CPUs."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_rss(pid: int) -> int:
    """Resident set size of a process and its descendants, in bytes."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


class Worker:
    def __init__(self, kind: str, args: argparse.Namespace, data: Path, steps: int | None = None) -> None:
        """Start `bench.py --worker KIND` and wait until it has set up."""
        self.kind = kind
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--worker",
                kind,
                "--data",
                str(data),
                "--steps",
                str(steps or args.steps),
                "--device",
                args.device,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,  # its own process group, DataLoader workers included: stopped as one
        )
        self.peak = 0
        self.info = self.read()

    def read(self) -> dict:
        """The worker's next answer (a JSON line); what else it prints (trainkit's messages) is passed on."""
        while line := self.proc.stdout.readline():
            if line.startswith("{"):
                return json.loads(line)
            print(f"  [{self.kind}] {line.rstrip()}", flush=True)
        raise SystemExit(f"benchmark worker {self.kind} died; run it alone to see why")

    def run(self, steps: int, what: str = "run") -> dict:
        """One timed window: its seconds and window_stats."""
        self.proc.stdin.write(f"{what} {steps}\n")
        self.proc.stdin.flush()
        return self.read()

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def close(self) -> None:
        """Ask the worker to quit; one that died already, or does not quit, is killed with its group."""
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
            self.proc.wait(60)


def measure(
    workers: dict[str, Worker], args: argparse.Namespace, steps: int, batch: int, what: str = "run", label: str = ""
) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    """The timed windows: a warm-up of each approach, then `--reps` rounds in rotating order. `what` is `run`
    (training steps) or `data` (the data path alone); the keys of `workers` are a, b and c (or a subset);
    `label` starts each printed line."""

    def timed(k: str) -> tuple[dict, float, float]:
        """One window of approach k, the others' process groups stopped (unless --no-isolate); returns the
        seconds, the CPU seconds the other approaches used meanwhile (their interference) and the CPU
        seconds the hypervisor stole from this machine meanwhile (another guest's interference)."""
        others = [w for j, w in workers.items() if j != k]
        if not args.no_isolate:
            for w in others:
                w.signal(signal.SIGSTOP)
        before, stolen_before = sum(tree_cpu(w.proc.pid) for w in others), steal_s()
        try:
            window = workers[k].run(steps, what)
        finally:
            after, stolen_after = sum(tree_cpu(w.proc.pid) for w in others), steal_s()
            if not args.no_isolate:
                for w in others:
                    w.signal(signal.SIGCONT)
        window["speed"] = speeds.speed(window["start"], window["start"] + window["seconds"]) if speeds else 1.0
        window["full_speed_s"] = window["seconds"] * window["speed"]
        return window, after - before, stolen_after - stolen_before

    speeds = probe() if args.device == "cpu" else None  # a GPU's windows are timed as they are
    for _ in range(WARMUPS):  # worker start-up, allocator, caches, and the memory the others settle on
        for k in workers:
            timed(k)
    times: dict[str, list[float]] = {k: [] for k in workers}
    stolen: dict[str, list[float]] = {k: [] for k in workers}
    steal: dict[str, list[float]] = {k: [] for k in workers}
    order = list(workers)
    windows: dict[str, list[dict]] = {k: [] for k in workers}
    for rep in range(args.reps):
        for k in order[rep % len(order) :] + order[: rep % len(order)]:
            window, cpu, vm = timed(k)
            times[k].append(window["full_speed_s"])
            windows[k].append(window)
            stolen[k].append(cpu)
            steal[k].append(vm)
        print(
            f"{label}{'' if what == 'run' else 'data only, '}rep {rep + 1}/{args.reps}: "
            + ", ".join(
                f"{NAMES[k]} {steps * batch / times[k][-1]:.0f} img/s at full speed "
                f"({steps * batch / windows[k][-1]['seconds']:.0f} raw, vCPU speed {windows[k][-1]['speed']:.2f}; "
                f"others {stolen[k][-1]:.2f} cpu-s, steal {steal[k][-1]:.2f} s)"
                for k in order
            ),
            flush=True,
        )
    retries: list[dict] = []
    for k in order:  # a repetition outside the others' range is measured again, up to RETRIES times
        again: set[int] = set()  # the repetitions measured again: a retry is not the next one's candidate
        for _ in range(RETRIES):
            i = outlier(times[k], again)
            if i is None:
                break
            again.add(i)
            window, cpu, vm = timed(k)
            retry = {"approach": NAMES[k], "what": label + what, "was_s": times[k][i], "now_s": window["full_speed_s"],
                     "slow_window": windows[k][i], "retry_window": window, "others_cpu_s": cpu, "steal_s": vm}  # fmt: skip
            retries.append(retry)
            print(f"{label}retry: {describe_retry(retry, steps * batch)}", flush=True)
            times[k][i], windows[k][i], stolen[k][i], steal[k][i] = window["full_speed_s"], window, cpu, vm
    return times, {"others_cpu_s": stolen, "steal_s": steal, "windows": windows, "retries": retries}


def rates(times: dict[str, list[float]], seen: dict, images: int) -> dict[str, dict]:
    """Each approach's images/s at full speed over the repetitions, their median and spread, and the raw median
    and spread (wall seconds as they were) beside them."""
    raw = {k: [images / w["seconds"] for w in windows] for k, windows in seen["windows"].items()}
    ips = {k: [images / t for t in v] for k, v in times.items()}
    out = {"ips": ips, "raw_ips": raw}
    for name, values in (("", ips), ("raw_", raw)):
        out[name + "med"] = {k: statistics.median(v) for k, v in values.items()}
        out[name + "spread"] = {k: (max(v) - min(v)) / out[name + "med"][k] for k, v in values.items()}
    return out


def outlier(seconds: list[float], again: set[int] = frozenset()) -> int | None:
    """While the spread is over SPREAD_LIMIT, the repetition farthest from the median of those not measured
    again yet (`again`); None when the spread is within it, or every repetition was measured again. A retry
    that confirms the value it replaced (the majority was the odd one: an approach still settling in its
    first windows) leaves the next retry to the other end."""
    if len(seconds) < 3:
        return None
    med = statistics.median(seconds)
    rates = [1 / t for t in seconds]
    if (max(rates) - min(rates)) * med <= SPREAD_LIMIT:  # spread of images/s over their median
        return None
    left = [i for i in range(len(seconds)) if i not in again]
    return max(left, key=lambda i: abs(seconds[i] - med)) if left else None


def describe_retry(retry: dict, images: int) -> str:
    """One line: the repetition measured again, and what its window cost beside the one that replaced it."""
    slow, new = retry["slow_window"], retry["retry_window"]

    def costs(w: dict) -> str:
        return (f"{images / w['full_speed_s']:.0f} img/s at full speed ({images / w['seconds']:.0f} raw, vCPU speed "
                f"{w['speed']:.2f}), cpu {w['cpu_s']:.2f} s, {w['minor_faults']} minor / "
                f"{w['major_faults']} major faults, {w['involuntary_switches']} preempted, "
                f"{w['mhz_before']:.0f}->{w['mhz_after']:.0f} MHz, "
                f"spin {w.get('spin_ms_before', 0):.1f}->{w.get('spin_ms_after', 0):.1f} ms")  # fmt: skip

    return f"{retry['approach']} ({retry['what']}): was {costs(slow)}; again {costs(new)}"


def self_check(med: dict[str, float], spread: dict[str, float]) -> list[str]:
    """Why these numbers should not be believed: a ceiling beaten beyond the noise, or a noisy approach."""
    problems = [
        f"{NAMES[k]}'s images/s spread over repetitions is {spread[k]:.0%} (more than {SPREAD_LIMIT:.0%}): "
        "the machine was not idle, or the approaches disturbed each other"
        for k in "abc"
        if spread[k] > SPREAD_LIMIT
    ]
    noise = max(spread["b"], spread["c"], 0.03)
    if med["c"] > med["b"] * (1 + noise):
        problems.append(
            f"trainkit ({med['c']:.0f} img/s) beats its ceiling ({med['b']:.0f}) by more than the noise "
            f"({noise:.0%}): the ceiling is not the bare step it should be"
        )
    return problems


# ----------------------------------------------------------------------------- trainkit's side of a window


def device_batches(run: Any, epoch: int) -> list:
    """One epoch of the run's own loader, augmented and on the device, collected before any timing."""
    from trainkit.data.loaders import epoch_batches
    from trainkit.run import devices

    return [
        devices.to_device(x, y, run.device, run.channels_last) for x, y in epoch_batches(run.data.train_loader, epoch)
    ]


def bare_steps(run: Any, batches: list) -> Callable[[int], None]:
    """(b), the ceiling: `go(n)` runs n bare training steps of trainkit's own model, optimizer, scheduler, loss,
    memory format and autocast (its frozen BatchNorm layers in eval mode, as the loop keeps them) over
    `batches`, doing nothing else."""
    from trainkit.run import devices

    cfg = run.cfg
    net, opt, loss_fn, scaler, sched = run.net, run.optimizer, run.loss_fn, run.scaler, run.scheduler
    per_step = sched is not None and cfg.scheduler is not None and cfg.scheduler.per_step
    net.train()
    for norm in run.frozen_norms:
        norm.eval()
    done = 0

    def go(n: int) -> None:
        nonlocal done
        for _ in range(n):
            x, y = batches[done % len(batches)]
            with devices.autocast(run.device, cfg.train.amp):
                loss = loss_fn(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if per_step:
                sched.step()
            done += 1

    return go


def whole_epochs(run: Any, steps: int, first: int = 0, before: Callable[[int], None] | None = None) -> Any:
    """(c): `go(n)`, one training epoch of the subset per `steps` steps, through trainkit's own loop, from
    epoch `first` (`before(epoch)` is called ahead of each, as the loop's fit does); `go.data_only(n)`: its
    batches alone."""
    from trainkit.data.loaders import epoch_batches
    from trainkit.run import loop as engine

    epoch = first

    def go(n: int) -> None:
        nonlocal epoch
        assert n % steps == 0, "trainkit runs whole epochs of the subset"
        for _ in range(n // steps):
            if before is not None:
                before(epoch)
            engine.train_one_epoch(run, epoch)
            epoch += 1

    def data_only(n: int) -> None:
        nonlocal epoch
        assert run.data.train_loader is not None and n % steps == 0
        for _ in range(n // steps):
            for _ in epoch_batches(run.data.train_loader, epoch):
                pass
            epoch += 1

    go.data_only = data_only  # type: ignore[attr-defined]
    return go


if __name__ == "__main__":
    probe_main()
