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
