"""benchmarks/benchlib.py (make bench): the self-check: which numbers it refuses to report as trustworthy."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import benchlib  # noqa: E402


def test_a_beaten_ceiling_or_a_noisy_approach_is_refused():
    calm = {"a": 0.05, "b": 0.05, "c": 0.05}
    assert benchlib.self_check({"a": 800, "b": 2100, "c": 2050}, calm) == []
    assert benchlib.self_check({"a": 800, "b": 2100, "c": 2150}, calm) == []  # within the noise
    beaten = benchlib.self_check({"a": 800, "b": 1673, "c": 1985}, {"a": 0.05, "b": 0.095, "c": 0.10})
    assert len(beaten) == 1 and "beats its ceiling" in beaten[0]
    noisy = benchlib.self_check({"a": 850, "b": 2100, "c": 2000}, {"a": 0.27, "b": 0.05, "c": 0.05})
    assert len(noisy) == 1 and "idiomatic" in noisy[0] and "27%" in noisy[0]


def test_a_repetition_outside_the_others_range_is_the_one_measured_again():
    assert benchlib.outlier([1.0, 1.02, 0.99, 1.01, 1.0]) is None  # a 3% spread: nothing to retry
    assert benchlib.outlier([1.0, 1.02, 1.66, 1.01, 0.99]) == 2  # 1,271 img/s among 2,116 to 2,198: that one
    assert benchlib.outlier([1.0, 0.8, 1.01, 1.0, 0.99]) == 1  # a fast outlier counts too
    assert benchlib.outlier([1.0, 1.5]) is None  # too few to tell which is out of range
    # a retry confirmed the fast window (2): the next retry goes to the other end, the slowest not retried
    assert benchlib.outlier([1.33, 1.29, 1.0, 1.3, 1.31], again={2}) == 0
    assert benchlib.outlier([1.33, 1.29, 1.0, 1.3, 1.31], again={0, 1, 2, 3, 4}) is None


def test_the_speed_probe_samples_every_vcpu_and_gives_a_window_its_mean_speed():
    """The real probe process: samples of each vCPU this process may run on, and a window's speed as a fraction
    of the fastest sample (1.0 for a window it has no sample of)."""
    import os
    import time

    probe = benchlib.SpeedProbe()
    try:
        start = time.perf_counter()
        while len(probe.samples) < len(os.sched_getaffinity(0)) or min(map(len, probe.samples.values())) < 5:
            assert time.perf_counter() - start < 60, f"the probe sampled {probe.samples} in 60 s"
            time.sleep(0.1)
        assert set(probe.samples) == set(os.sched_getaffinity(0))
        speed = probe.speed(start, time.perf_counter())
        assert 0.1 < speed <= 1.0
        assert probe.speed(start - 100, start - 90) == 1.0
    finally:
        probe.close()
    assert probe.proc.returncode is not None


def test_rates_give_full_speed_and_raw_images_per_second_side_by_side():
    windows = {"a": [{"seconds": 2.0}, {"seconds": 1.0}, {"seconds": 1.5}]}
    full_speed = {"a": [1.0, 0.9, 1.1]}  # seconds x speed: what the slow windows would have taken at full speed
    r = benchlib.rates(full_speed, {"windows": windows}, 100)
    assert r["ips"]["a"] == [100.0, 100 / 0.9, 100 / 1.1]
    assert r["raw_ips"]["a"] == [50.0, 100.0, 100 / 1.5]
    assert r["med"]["a"] == 100.0 and r["raw_med"]["a"] == 100 / 1.5
    assert abs(r["spread"]["a"] - (100 / 0.9 - 100 / 1.1) / 100) < 1e-12
    assert abs(r["raw_spread"]["a"] - 50 / (100 / 1.5)) < 1e-12
