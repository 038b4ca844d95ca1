"""bench/peers.py's summary: each system compared in WebDataset's rounds gets its cold
ratio round by round (WebDataset's time in that round over its own) and their median,
next to best against best; the max_waste case, run after those rounds, is not paired."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def peers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                "AWS_EC2_METADATA_DISABLED"):   # the bench sets these at import: undone after
        monkeypatch.setenv(key, "testing")
    sys.modules.pop("peers", None)
    import peers
    yield peers
    sys.modules.pop("peers", None)


def _run(cold: float, warm: float = 1.0, nbytes: float = 100e6) -> dict:
    return {"cold": {"seconds": cold, "bytes": nbytes, "eighths": 6.0, "pad_ids": []},
            "warm": {"seconds": warm, "bytes": 0, "eighths": 6.0}}


def test_cold_ratios_are_paired_round_by_round(peers):
    wds = [_run(1.0), _run(2.0), _run(0.9)]
    block = [_run(0.5), _run(2.5), _run(1.0)]
    rounds = {"webdataset + cache_dir": wds, "cloudrec block, cache=auto": block,
              peers.WASTE: [_run(5.0), _run(6.0), _run(5.5)],
              "cloudrec global, cache=auto": [_run(0.8), _run(0.9)]}   # a round missing
    best = {k: {ph: min((r[ph] for r in v), key=lambda x: x["seconds"]) for ph in ("cold", "warm")}
            for k, v in rounds.items()}
    out = peers.summarise(best, 100.0, 100.0, None, rounds)
    blk = out["cloudrec block, cache=auto"]
    assert blk["cold_x_webdataset_rounds"] == pytest.approx([2.0, 0.8, 0.9])
    assert blk["cold_x_webdataset_median"] == pytest.approx(0.9)
    assert blk["cold_x_webdataset"] == pytest.approx(0.9 / 0.5)   # best against best
    assert "cold_x_webdataset_rounds" not in out[peers.WASTE]
    assert "cold_x_webdataset_median" not in out["cloudrec global, cache=auto"]
    assert np.isclose(out[peers.WASTE]["cold_x_webdataset"], 0.9 / 5.0)


def test_without_rounds_only_best_against_best(peers):
    best = {"webdataset + cache_dir": _run(1.0), "cloudrec block, cache=auto": _run(0.8)}
    out = peers.summarise(best, 100.0, 100.0)
    assert out["cloudrec block, cache=auto"]["cold_x_webdataset"] == pytest.approx(1.25)
    assert "cold_x_webdataset_median" not in out["cloudrec block, cache=auto"]


def test_runs_pool_round_by_round(peers, tmp_path, monkeypatch):
    def run(rounds, commit):
        return {"settings": {"commit": commit, "rounds": len(rounds)}, "started": "2026-12-03T14:00:00",
                "results": {"ratios": {
                    "cloudrec block, cache=auto": {"cold_x_webdataset": max(rounds),
                                                   "cold_x_webdataset_rounds": rounds,
                                                   "cold_x_webdataset_median": float(np.median(rounds))},
                    peers.WASTE: {"cold_x_webdataset": 0.14},      # never paired: left out
                    "block_vs_whole_objects": 1.1}}}
    pooled = peers.pool_runs([run([1.3, 0.9, 1.25], "a"), run([1.1, 1.21], "b")])
    assert list(pooled) == ["cloudrec block, cache=auto"]
    p = pooled["cloudrec block, cache=auto"]
    assert p["rounds"] == [1.3, 0.9, 1.25, 1.1, 1.21] and p["n"] == 5
    assert p["median"] == pytest.approx(1.21) and p["faster"] == 4 and p["at_least_1_2"] == 3
    assert p["run_medians"] == [pytest.approx(1.25), pytest.approx(1.155)]
    assert p["run_best"] == [1.3, 1.21]
