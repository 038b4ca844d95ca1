"""partition_epoch: exactly-once coverage over ranks x workers, equal batch counts, padding."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudrec.errors import ConfigError
from cloudrec.reader.orders import MODES, epoch_order
from cloudrec.reader.partition import num_steps, partition_epoch


def all_slices(order, W, K, B, last, start=0):
    return {(r, k): partition_epoch(order, rank=r, world_size=W, worker=k, num_workers=K,
                                    batch_size=B, last=last, start=start)
            for r in range(W) for k in range(K)}


def rank_batches_round_robin(slices, r, K):
    """The rank's batches in the order a DataLoader polling its K workers round-robin yields them."""
    its = [list(slices[(r, k)].batches()) for k in range(K)]
    out = []
    for i in range(max(len(x) for x in its)):
        out.extend(x[i] for x in its if i < len(x))
    return out


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 300), W=st.integers(1, 8), K=st.integers(1, 4), B=st.integers(1, 16),
       last=st.sampled_from(["pad", "drop"]), mode=st.sampled_from(MODES), seed=st.integers(0, 99),
       epoch=st.integers(0, 5))
def test_union_is_the_dataset_exactly_once(n, W, K, B, last, mode, seed, epoch):
    order = epoch_order(n, seed, epoch, mode, block_size=7, window_blocks=3, buffer_size=20)
    slices = all_slices(order, W, K, B, last)
    steps = num_steps(n, world_size=W, batch_size=B, last=last)
    real, pads = Counter(), Counter()
    for r in range(W):
        per_rank = sum(slices[(r, k)].num_batches for k in range(K))
        assert per_rank == steps            # every rank the same number of batches
        for k in range(K):
            sl = slices[(r, k)]
            assert len(sl.ids) == len(sl.is_pad) == sl.num_batches * B   # every batch full
            real.update(sl.ids[~sl.is_pad].tolist())
            pads.update(sl.ids[sl.is_pad].tolist())
    assert all(c == 1 for c in real.values())        # no duplicates among real records
    if last == "pad":
        assert set(real) == set(range(n))
        assert sum(pads.values()) == steps * W * B - n   # all repetition is reported as pad
        # pads repeat from the start of the epoch's order, cycling
        expect = Counter(order[np.arange(steps * W * B - n) % max(n, 1)].tolist()) if n else Counter()
        assert pads == expect
    else:
        kept = (n // (W * B)) * W * B
        assert not pads and set(real) == set(order[:kept].tolist())


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 200), W=st.integers(1, 6), K=st.integers(1, 4), B=st.integers(1, 9),
       last=st.sampled_from(["pad", "drop"]))
def test_workers_round_robin_reproduce_the_rank_sequence(n, W, K, B, last):
    order = epoch_order(n, 1, 1)
    slices = all_slices(order, W, K, B, last)
    for r in range(W):
        whole = list(partition_epoch(order, rank=r, world_size=W, batch_size=B, last=last).batches())
        rr = rank_batches_round_robin(slices, r, K)
        assert len(rr) == len(whole)
        for (a, pa), (b, pb) in zip(rr, whole):
            assert np.array_equal(a, b) and np.array_equal(pa, pb)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 200), W=st.integers(1, 6), B=st.integers(1, 9), data=st.data())
def test_start_offset_continues_where_a_prefix_stopped(n, W, B, data):
    order = epoch_order(n, 2, 0)
    start = data.draw(st.integers(0, n))
    W2 = data.draw(st.integers(1, 6))
    slices = all_slices(order, W2, 1, B, "pad", start=start)
    got = Counter(order[:start].tolist())
    for sl in slices.values():
        got.update(sl.ids[~sl.is_pad].tolist())
    assert got == Counter(range(n))


def test_worked_example_n10_w3_b2():
    order = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    # global steps of 6 positions: step 0 = [9 8 | 7 6 | 5 4], step 1 = [3 2 | 1 0 | pad pad]
    r0 = partition_epoch(order, rank=0, world_size=3, batch_size=2)
    r2 = partition_epoch(order, rank=2, world_size=3, batch_size=2)
    assert r0.ids.tolist() == [9, 8, 3, 2] and not r0.is_pad.any()
    assert r2.ids.tolist() == [5, 4, 9, 8] and r2.is_pad.tolist() == [False, False, True, True]
    assert r2.num_pad == 2 and r2.steps.tolist() == [0, 1]
    d = partition_epoch(order, rank=2, world_size=3, batch_size=2, last="drop")
    assert d.ids.tolist() == [5, 4] and d.num_batches == 1
    w1 = partition_epoch(order, rank=0, world_size=3, batch_size=2, worker=1, num_workers=2)
    assert w1.ids.tolist() == [3, 2] and w1.steps.tolist() == [1]


def test_padding_cycles_when_pad_exceeds_the_epoch():
    sl = partition_epoch(np.array([4, 1, 2]), rank=1, world_size=2, batch_size=4)
    # positions 4..7 are all beyond n=3: repeat order[1], order[2], order[0], order[1]
    assert sl.ids.tolist() == [1, 2, 4, 1] and sl.is_pad.all()


def test_empty_and_tiny_epochs():
    e = partition_epoch(np.empty(0, np.int64), rank=1, world_size=4, batch_size=3)
    assert e.num_batches == 0 and e.ids.dtype == np.int64
    assert partition_epoch(np.arange(5), world_size=2, rank=1, batch_size=3, last="drop").num_batches == 0


@pytest.mark.parametrize("kw", [dict(rank=2, world_size=2), dict(rank=-1, world_size=2), dict(world_size=0),
                                dict(worker=3, num_workers=3), dict(batch_size=0), dict(last="keep"),
                                dict(start=-1)])
def test_bad_arguments(kw):
    with pytest.raises(ConfigError):
        partition_epoch(np.arange(10), **kw)
