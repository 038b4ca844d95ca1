"""ImageIter's reads at an epoch's end: the padding of the last batch reads (and decodes)
only the samples it needs, and the next epoch's stream, opened while the workers finish the
last one, is taken over by ``reset()`` only when it reads that epoch's order from its start."""
import numpy as np
import pytest

from cloudrec.iterators.image_state import _Primed
from test_imageiter_runs import _batches, _iter, _rec


def _count_decodes(it):
    calls = []
    orig = it.imdecode

    def counting(s):
        calls.append(1)
        return orig(s)
    it.imdecode = counting
    return calls


@pytest.mark.parametrize("threads", [1, 2])
def test_padding_decodes_only_what_it_needs(tmp_path, threads):
    rec, idx = _rec(tmp_path, n=23)  # batches of 4: the last one needs 1 sample of padding
    it = _iter(rec, idx, threads, shuffle=True, seed=3)
    assert it._lookahead >= 8  # without the budget the padding would decode a lookahead
    calls = _count_decodes(it)
    first = _batches(it)
    assert len(first) == 6 and first[-1][2] == 1
    # 23 samples + 1 of padding (+ at most a run past it, read by the run in flight)
    assert 24 <= len(calls) <= 24 + it._run_len
    it.close()


def test_padding_with_a_broken_sample_still_fills_the_batch(tmp_path):
    # record 1 is broken and skipped: the padding needs one more sample than planned
    rec, idx = _rec(tmp_path, n=10, broken=(1,))
    for run_len in (1, 2):
        it = _iter(rec, idx, 1, run_len, on_error="skip")
        got = _batches(it)
        assert [b[3].tolist() for b in got] == [[0, 2, 3, 4], [5, 6, 7, 8], [9, 0, 2, 3]]
        assert [b[2] for b in got] == [0, 0, 3]
        it.close()


def test_next_epoch_stream_is_adopted_and_batches_equal_a_fresh_iterator(tmp_path):
    rec, idx = _rec(tmp_path, n=23)
    it = _iter(rec, idx, 2, shuffle=True, seed=11)
    _batches(it)
    assert it._next_stream is not None and it._next_stream[0] == it._epoch + 1
    it.reset()
    assert it._next_stream is None and isinstance(it._stream, _Primed)
    second = _batches(it)
    it.close()
    ref = _iter(rec, idx, 1, shuffle=True, seed=11)
    _batches(ref)
    ref._close_next_stream()  # the reference reads epoch 2 from a cold stream
    ref.reset()
    assert not isinstance(ref._stream, _Primed)
    expect = _batches(ref)
    ref.close()
    assert len(second) == len(expect)
    for a, b in zip(second, expect):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert a[2] == b[2] and np.array_equal(a[3], b[3])


def test_stream_opened_ahead_is_dropped_for_another_position(tmp_path):
    rec, idx = _rec(tmp_path, n=23)
    it = _iter(rec, idx, 2, shuffle=True, seed=5)
    epoch0 = _batches(it)
    state = it.state_dict()
    it.reset()
    it.next()
    mid = it.state_dict()  # epoch 1 after one batch
    expect = _batches(it)
    # the end of epoch 1 opened epoch 2's stream; resuming mid-epoch 1 must not use it
    assert it._next_stream is not None
    it.load_state_dict(mid)
    assert it._next_stream is None and not isinstance(it._stream, _Primed)
    again = _batches(it)
    assert len(again) == len(expect)
    for a, b in zip(again, expect):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[3], b[3])
    it.load_state_dict(state)  # the end of epoch 0: the next batch is epoch 1's first
    assert [b[2] for b in epoch0][-1] == 1
    it.close()
    assert it._next_stream is None


def test_sampler_state_untouched_by_the_read_ahead(tmp_path):
    rec, idx = _rec(tmp_path, n=23)
    it = _iter(rec, idx, 2, shuffle=True, seed=2)
    for _ in range(5):
        it.next()
    before = it.state_dict()
    _batches(it)  # reaches the end: the next epoch's stream is opened
    assert it._next_stream is not None
    after = it.state_dict()
    assert after["epoch"] == before["epoch"] and after["seed"] == before["seed"]
    assert it.sampler.epoch == it._epoch
    it.close()
