"""partition_epoch: exactly-once coverage over ranks x workers, contiguous spans, padding, legs."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudrec.errors import ConfigError
from cloudrec.reader.orders import MODES, epoch_order, order_plan
from cloudrec.reader.partition import Layout, Leg, RemainingOrder, num_steps, partition_epoch

OPTS = dict(block_size=7, window_blocks=3, buffer_size=20)


def all_slices(order, W, K, B, last, **kw):
    return {(r, k): partition_epoch(order, rank=r, world_size=W, worker=k, num_workers=K,
                                    batch_size=B, last=last, **kw)
            for r in range(W) for k in range(K)}


def rank_batches_round_robin(slices, r, K):
    """The rank's batches in the order a DataLoader polling its K workers round-robin yields them."""
    its = [list(slices[(r, k)].batches()) for k in range(K)]
    out = []
    for i in range(max(len(x) for x in its)):
        out.extend(x[i] for x in its if i < len(x))
    return out


def runs(positions):
    """Number of maximal runs of consecutive integers in ``positions`` (in the given order)."""
    p = np.asarray(positions)
    return 0 if p.size == 0 else 1 + int(np.count_nonzero(np.diff(p) != 1))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 300), W=st.integers(1, 8), K=st.integers(1, 4), B=st.integers(1, 16),
       last=st.sampled_from(["pad", "drop"]), mode=st.sampled_from(MODES), seed=st.integers(0, 99),
       epoch=st.integers(0, 5))
def test_union_is_the_dataset_exactly_once(n, W, K, B, last, mode, seed, epoch):
    order = epoch_order(n, seed, epoch, mode, **OPTS)
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


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 400), W=st.integers(1, 9), K=st.integers(1, 5), B=st.integers(1, 40))
def test_padding_is_spread_at_most_one_partly_padded_batch_per_rank(n, W, K, B):
    """Issue 17.5: with last='pad' only a rank's final batch holds pads, and fewer than B of
    them unless the total padding forces a whole pad batch somewhere (pigeonhole)."""
    order = epoch_order(n, 0, 0, "none")
    slices = all_slices(order, W, K, B, "pad")
    total_pad = num_steps(n, world_size=W, batch_size=B) * W * B - n
    for r in range(W):
        batches = rank_batches_round_robin(slices, r, K)
        pads = [int(p.sum()) for _, p in batches]
        assert all(p == 0 for p in pads[:-1])                # padding only in the last batch
        assert pads[-1] <= B
        if pads[-1] == B:                                    # a whole pad batch only if forced
            assert total_pad > W * (B - 1)
        assert max(pads) - min(pads) <= B
    per_rank = [sum(slices[(r, k)].num_pad for k in range(K)) for r in range(W)]
    assert max(per_rank) - min(per_rank) <= 1                # spread evenly over the ranks


def test_issue_example_100_records_3_parts_batch_32():
    order = np.arange(100)
    pads = [[int(p.sum()) for _, p in partition_epoch(order, rank=r, world_size=3, batch_size=32).batches()]
            for r in range(3)]
    assert pads == [[0, 30], [0, 31], [0, 31]]           # was [0, 28], [0, 32], [0, 32]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), W=st.integers(1, 6), K=st.integers(1, 5), B=st.integers(1, 12),
       last=st.sampled_from(["pad", "drop"]), seed=st.integers(0, 50))
def test_every_rank_and_worker_reads_one_contiguous_span(n, W, K, B, last, seed):
    """Issue 13.1: a worker's real records are one run of order positions, a rank's K spans
    tile one run, and the ranks' spans tile the order in rank order."""
    order = epoch_order(n, seed, 0, "global")
    where = np.empty(n, np.int64)
    where[order] = np.arange(n)
    slices = all_slices(order, W, K, B, last)
    prev_end = 0
    for r in range(W):
        for k in range(K):
            sl = slices[(r, k)]
            pos = where[sl.ids[~sl.is_pad]]
            assert runs(pos) <= 1
            if pos.size:
                assert pos[0] == prev_end and np.array_equal(pos, np.arange(pos[0], pos[0] + pos.size))
                prev_end = int(pos[-1]) + 1
    assert prev_end == (n if last == "pad" else n // (W * B) * W * B)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 200), W=st.integers(1, 6), K=st.integers(1, 4), B=st.integers(1, 9),
       last=st.sampled_from(["pad", "drop"]))
def test_rank_sequence_is_the_layout_whatever_the_polling(n, W, K, B, last):
    """Round-robin over the K worker slices gives batch i from worker i % K, steps in order."""
    order = epoch_order(n, 1, 1)
    slices = all_slices(order, W, K, B, last)
    for r in range(W):
        for k in range(K):
            assert slices[(r, k)].steps.tolist() == list(range(k, slices[(r, k)].num_batches * K, K))
        assert len(rank_batches_round_robin(slices, r, K)) == num_steps(n, world_size=W, batch_size=B,
                                                                          last=last)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 250), W=st.integers(1, 5), K=st.integers(1, 4), B=st.integers(1, 9),
       last=st.sampled_from(["pad", "drop"]), data=st.data())
def test_done_continues_the_same_layout_exactly(n, W, K, B, last, data):
    order = epoch_order(n, 3, 2, "block", **OPTS)
    T = num_steps(n, world_size=W, batch_size=B, last=last)
    done = data.draw(st.integers(0, T))
    whole = all_slices(order, W, K, B, last)
    rest = all_slices(order, W, K, B, last, done=done)
    for (r, k), sl in whole.items():
        keep = sl.steps >= done
        mask = np.repeat(keep, B)
        got = rest[(r, (k - done) % K)]      # DataLoader worker 0 serves the next batch
        assert np.array_equal(got.ids, sl.ids[mask])
        assert np.array_equal(got.is_pad, sl.is_pad[mask])
        assert got.steps.tolist() == (sl.steps[keep] - done).tolist()
    for r in range(W):   # and polling round-robin from worker 0 yields batches done, done+1, ...
        seq = sorted((s, k) for k in range(K) for s in rest[(r, k)].steps.tolist())
        assert [k for _, k in seq] == [i % K for i in range(len(seq))]
    # records consumed by all ranks after `done` batches do not depend on K
    lay = Layout(n, W, K, B, last)
    assert lay.consumed(done) == Layout(n, W, 1, B, last).consumed(done) == \
        (min(n, done * W * B) if last == "pad" else done * W * B)


def consumed_ids(order, W, K, B, last, done, **kw):
    """Real ids the ranks yielded in their first ``done`` batches."""
    out = []
    for sl in all_slices(order, W, K, B, last, **kw).values():
        keep = np.repeat(sl.steps < done, B) & ~sl.is_pad
        out.extend(sl.ids[keep].tolist())
    return out


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 250), mode=st.sampled_from(MODES), data=st.data())
def test_legs_hand_out_every_remaining_record_exactly_once(n, mode, data):
    """Stop under one layout, resume under another (and again): each record once overall."""
    order = epoch_order(n, 7, 1, mode, **OPTS)
    layouts = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 8),
                        st.sampled_from(["pad", "drop"]))
    legs, seen = [], []
    for _ in range(data.draw(st.integers(1, 3))):
        W, K, B, last = data.draw(layouts)
        n_left = len(RemainingOrder(order, legs))
        done = data.draw(st.integers(0, num_steps(n_left, world_size=W, batch_size=B, last=last)))
        seen += consumed_ids(order, W, K, B, last, done, legs=legs)
        legs.append(Leg(W, K, B, last, done))
    W, K, B = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 8))
    for sl in all_slices(order, W, K, B, "pad", legs=legs).values():
        seen += sl.ids[~sl.is_pad].tolist()
    assert sorted(seen) == list(range(n))


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


@settings(max_examples=120, deadline=None)
@given(n=st.integers(0, 3000), mode=st.sampled_from(MODES), W=st.integers(1, 7), K=st.integers(1, 4),
       B=st.integers(1, 50), data=st.data())
def test_lazy_plan_gives_the_same_slices_as_the_full_order(n, mode, W, K, B, data):
    opts = dict(block_size=data.draw(st.integers(1, 60)), window_blocks=data.draw(st.integers(1, 5)),
                buffer_size=data.draw(st.integers(1, 300)))
    full = epoch_order(n, 4, 9, mode, **opts)
    plan = order_plan(n, 4, 9, mode, **opts)
    legs = [Leg(3, 2, 5, "pad", 1)] if n > 40 else []
    for key, sl in all_slices(full, W, K, B, "pad", legs=legs).items():
        lazy = partition_epoch(plan, rank=key[0], world_size=W, worker=key[1], num_workers=K,
                               batch_size=B, legs=legs)
        assert lazy.ids.dtype == np.int32
        assert np.array_equal(lazy.ids, sl.ids) and np.array_equal(lazy.is_pad, sl.is_pad)


def test_worked_example_n10_w3_b2():
    order = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    # T = ceil(10 / 6) = 2 batches per rank; ranks own 4, 3, 3 records: [9 8 7 6 | 5 4 3 | 2 1 0]
    r0 = partition_epoch(order, rank=0, world_size=3, batch_size=2)
    r2 = partition_epoch(order, rank=2, world_size=3, batch_size=2)
    assert r0.ids.tolist() == [9, 8, 7, 6] and not r0.is_pad.any()
    # rank 1 pads 1 (order[0]), rank 2 pads the next one (order[1])
    assert r2.ids.tolist() == [2, 1, 0, 8] and r2.is_pad.tolist() == [False, False, False, True]
    assert r2.num_pad == 1 and r2.steps.tolist() == [0, 1]
    d = partition_epoch(order, rank=2, world_size=3, batch_size=2, last="drop")
    assert d.ids.tolist() == [5, 4] and d.num_batches == 1
    # two workers: worker 0 reads batch 0, worker 1 batch 1, each its own run
    w0 = partition_epoch(order, rank=0, world_size=3, batch_size=2, worker=0, num_workers=2)
    w1 = partition_epoch(order, rank=0, world_size=3, batch_size=2, worker=1, num_workers=2)
    assert w0.ids.tolist() == [9, 8] and w1.ids.tolist() == [7, 6] and w1.steps.tolist() == [1]


def test_padding_cycles_when_pad_exceeds_the_epoch():
    sl = partition_epoch(np.array([4, 1, 2]), rank=1, world_size=2, batch_size=4)
    # ranks own [4 1] and [2]; rank 0 pads order[0], order[1]; rank 1 pads order[2], order[0], order[1]
    assert sl.ids.tolist() == [2, 2, 4, 1] and sl.is_pad.tolist() == [False, True, True, True]


def test_empty_and_tiny_epochs():
    e = partition_epoch(np.empty(0, np.int64), rank=1, world_size=4, batch_size=3)
    assert e.num_batches == 0 and e.ids.dtype == np.int64
    assert partition_epoch(np.arange(5), world_size=2, rank=1, batch_size=3, last="drop").num_batches == 0


@pytest.mark.parametrize("kw", [dict(rank=2, world_size=2), dict(rank=-1, world_size=2), dict(world_size=0),
                                dict(worker=3, num_workers=3), dict(batch_size=0), dict(last="keep"),
                                dict(start=-1), dict(done=-1), dict(done=99)])
def test_bad_arguments(kw):
    with pytest.raises(ConfigError):
        partition_epoch(np.arange(10), **kw)


@pytest.mark.parametrize("item", [[1, 1, 1, "keep", 0], [0, 1, 1, "pad", 0], [1, 1, 1, "pad", -1], [1, 2],
                                  "junk"])
def test_malformed_legs_are_config_errors(item):
    with pytest.raises(ConfigError, match="leg"):
        Leg.from_list(item)


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 1500), W=st.integers(1, 4), K=st.integers(1, 4), B=st.integers(1, 40),
       mode=st.sampled_from(["block", "shard", "none"]), data=st.data())
def test_exclusive_part_of_a_span_holds_whole_windows_of_this_worker_only(n, W, K, B, mode, data):
    """The fetcher hints: ids[lo:hi] cover whole windows/buffers that no other worker reads,
    and chunk_starts are exactly the window starts inside the span."""
    opts = dict(block_size=data.draw(st.integers(1, 30)), window_blocks=data.draw(st.integers(1, 4)),
                buffer_size=data.draw(st.integers(1, 200)))
    plan = order_plan(n, 1, 2, mode, **opts)
    full = epoch_order(n, 1, 2, mode, **opts)
    where = np.empty(n, np.int64)
    where[full] = np.arange(n)
    starts_all = [p for p in range(n + 1) if plan.is_chunk_start(p)]
    for (r, k), sl in all_slices(plan, W, K, B, "pad").items():
        real = sl.ids[~sl.is_pad]
        if not real.size:
            continue
        pos = where[real]
        a, b = int(pos[0]), int(pos[-1]) + 1
        assert sl.chunk_starts.tolist() == [p - a for p in starts_all if a < p < b] or mode == "none"
        lo, hi = sl.exclusive
        if hi > lo:
            assert plan.is_chunk_start(a + lo) and plan.is_chunk_start(a + hi)
            # every position of the windows it touches is inside this worker's span
            inner = [p for p in starts_all if a + lo <= p <= a + hi]
            assert inner[0] == a + lo and inner[-1] == a + hi
        outside = np.concatenate([pos[:lo], pos[hi:]])
        assert not np.isin(outside, pos[lo:hi]).any()


def test_global_orders_give_no_exclusive_hint_and_resumed_layouts_neither():
    sl = partition_epoch(order_plan(100, 0, 0, "global"), batch_size=8)
    assert sl.exclusive is None and sl.chunk_starts.size == 0
    sl = partition_epoch(order_plan(100, 0, 0, "block", block_size=4), batch_size=8,
                         legs=[Leg(2, 1, 8, "pad", 1)])
    assert sl.exclusive is None
