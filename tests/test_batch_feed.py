"""BatchPipeline's producer: the next epoch built ahead has its second batch's records read
(not decoded) before start() adopts it, the GIL hand-off after each queued task changes no
batch, and a plan's slots come out of the stream in order with pads marked."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cloudrec.pipeline import batch_parts
from cloudrec.pipeline.batch_parts import read_slots, stream_slots
from cloudrec.pipeline.batcher import BatchPipeline, BatchPlan


class _Fetch:
    """Records as (id, bytes of the id), counting what each stream handed out."""

    def __init__(self) -> None:
        self.pulled = []

    def __call__(self, ids):
        pulled = []
        self.pulled.append(pulled)
        for rid in np.asarray(ids).tolist():
            pulled.append(rid)
            yield rid, bytes([rid % 256]) * 4


def _process(payload, rid, slot, buf):
    buf.data[slot] = payload[0] + 1000 * buf.plan.epoch
    buf.label[slot] = rid


def _plans(epoch, n_batches=4, b=4):
    return [BatchPlan(np.arange(i * b, (i + 1) * b), 0, epoch) for i in range(n_batches)]


def _drain(pipe):
    out = []
    while True:
        got = pipe.next()
        if got is None:
            return out
        out.append((got.data.copy(), got.label.copy()))


def test_next_epoch_reads_its_second_batch_before_adoption():
    fetch = _Fetch()
    pipe = BatchPipeline(fetch, _process, (1,), np.float32, 1, threads=2, prefetch=2)
    try:
        pipe.start(_plans(0), key=0, next_plans=(1, _plans(1)))
        first = _drain(pipe)
        deadline = time.monotonic() + 5
        while len(fetch.pulled) < 2 or len(fetch.pulled[1]) < 8:
            assert time.monotonic() < deadline, fetch.pulled
            time.sleep(0.01)
        time.sleep(0.05)  # and no further: the producer waits for the adoption
        assert fetch.pulled[1] == list(range(8))
        pipe.wait_idle()
        pipe.start(_plans(1), key=1)  # adopted
        second = _drain(pipe)
    finally:
        pipe.close()
    assert len(fetch.pulled) == 2 and fetch.pulled[1] == list(range(16))
    assert len(first) == len(second) == 4
    for i, (data, label) in enumerate(second):
        assert label.ravel().tolist() == list(range(4 * i, 4 * i + 4))
        assert data.ravel().tolist() == [1000 + r for r in range(4 * i, 4 * i + 4)]


def test_not_adopted_epoch_built_ahead_is_dropped():
    fetch = _Fetch()
    pipe = BatchPipeline(fetch, _process, (1,), np.float32, 1, threads=1, prefetch=2)
    try:
        pipe.start(_plans(0), key=0, next_plans=(1, _plans(1)))
        _drain(pipe)
        pipe.start(_plans(5, 2), key=5)  # another epoch: a fresh stream, fresh batches
        got = _drain(pipe)
    finally:
        pipe.close()
    assert [d.ravel().tolist() for d, _ in got] == [[5000 + r for r in range(4)],
                                                    [5000 + r for r in range(4, 8)]]


@pytest.mark.parametrize("pause", [0.0, 5e-5, 1e-3])
def test_gil_hand_off_changes_no_batch(monkeypatch, pause):
    monkeypatch.setattr(batch_parts, "GIL_YIELD_S", pause)
    fetch = _Fetch()
    pipe = BatchPipeline(fetch, _process, (1,), np.float32, 1, threads=3, prefetch=2)
    try:
        pipe.start(_plans(2, 6, 16))
        got = _drain(pipe)
    finally:
        pipe.close()
    assert np.concatenate([lab.ravel() for _, lab in got]).tolist() == list(range(96))


def test_yield_gil_sleeps_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(batch_parts.time, "sleep", calls.append)
    monkeypatch.setattr(batch_parts, "GIL_YIELD_S", 0.0)
    batch_parts.yield_gil()
    monkeypatch.setattr(batch_parts, "GIL_YIELD_S", 2e-5)
    batch_parts.yield_gil()
    assert calls == [2e-5]


def test_slots_in_order_with_pads():
    plan = BatchPlan(np.array([3, 5, -1, -1]), 2, 0)
    stream = iter([(3, b"a"), (5, b"b")])
    assert list(stream_slots(plan, stream)) == [(0, 3, b"a"), (1, 5, b"b"), (2, -1, None),
                                                (3, -1, None)]
    with pytest.raises(RuntimeError, match="fetcher returned record 4, expected 3"):
        list(stream_slots(plan, iter([(4, b"x")])))
    stop = threading.Event()
    stop.set()
    assert read_slots(plan, iter([(3, b"a"), (5, b"b")]), stop) is None
