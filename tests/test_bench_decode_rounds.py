"""bench/imagerecorditer.py's rounds: with ``adjacent_decode`` the decode loop runs between
the systems, each system is compared with the two decode runs next to it, and every other
round runs the systems in reverse order; without it, the old layout (bench/imageiter.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def irb(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("_common", "imagerecorditer"):
        sys.modules.pop(name, None)
    import imagerecorditer
    yield imagerecorditer
    for name in ("_common", "imagerecorditer"):
        sys.modules.pop(name, None)


def _clock(monkeypatch, irb):
    """process_time() of the bench module advancing 1 ms per call (fakes take no CPU)."""
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(irb.time, "process_time", lambda: next(ticks) / 1e3)


def _payloads(n=4):
    rng = np.random.default_rng(0)
    return [cv2.imencode(".jpg", rng.integers(0, 255, (16, 24, 3), np.uint8))[1].tobytes()
            for _ in range(n)]


def test_adjacent_decode_rounds_alternate_order_and_record_neighbours(irb, monkeypatch):
    decodes = iter([100.0, 200.0, 300.0, 400.0, 500.0, 600.0])
    monkeypatch.setattr(irb, "bench_decode", lambda payloads, t: next(decodes))
    _clock(monkeypatch, irb)
    calls = []

    def epoch(name):
        calls.append(name)
        return {"exact": 10.0, "fast": 20.0}[name]
    systems = {1: {"exact": "exact", "fast": "fast"}}
    rounds = irb.run_rounds(_payloads(), systems, [1], 2, epoch, adjacent_decode=True)
    assert calls == ["exact", "fast", "fast", "exact"]  # round 2 reversed
    r1, r2 = rounds[1]
    # round 1: decode 100, exact, decode 200, fast, decode 300
    assert (r1["decode_before"], r1["exact_decode"], r1["fast_decode"], r1["decode_after"]) \
        == (100.0, 150.0, 250.0, 300.0)
    # round 2: decode 400, fast, decode 500, exact, decode 600
    assert (r2["decode_before"], r2["fast_decode"], r2["exact_decode"], r2["decode_after"]) \
        == (400.0, 450.0, 550.0, 600.0)
    for row in rounds[1]:
        assert {"exact_cpu_ms", "fast_cpu_ms", "decode_before_cpu_ms", "decode_cpu_ms"} <= set(row)
    s = irb.summarize_rounds(rounds, systems)["1"]
    assert s["exact_vs_decode"] == pytest.approx(np.median([10 / 150, 10 / 550]))
    assert s["fast_vs_decode"] == pytest.approx(np.median([20 / 250, 20 / 450]))
    assert s["decode_img_s"] == pytest.approx(np.median([200.0, 500.0]))
    # every timed run took one tick of the fake clock: the same CPU per image
    assert rounds[1][0]["decode_cpu_ms"] == rounds[1][0]["exact_cpu_ms"] == 0.25
    assert s["exact_cpu_vs_decode"] == pytest.approx(1.0)


def test_rounds_without_adjacent_decode_keep_the_round_ends(irb, monkeypatch):
    decodes = iter([100.0, 300.0])
    monkeypatch.setattr(irb, "bench_decode", lambda payloads, t: next(decodes))
    _clock(monkeypatch, irb)
    calls = []
    systems = {2: {"exact": "exact", "fast": "fast"}}
    rounds = irb.run_rounds(_payloads(), systems, [2], 1,
                            lambda name: calls.append(name) or 50.0)
    assert calls == ["exact", "fast"]
    row = rounds[2][0]
    assert "exact_decode" not in row and "decode_cpu_ms" not in row
    s = irb.summarize_rounds(rounds, systems)["2"]
    assert s["exact_vs_decode"] == pytest.approx(50 / 200)
    assert s["fast_vs_decode"] == pytest.approx(50 / 200)
