"""Epoch orders: permutations, determinism, mode structure, shuffle quality."""
from __future__ import annotations

import itertools
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudrec.errors import ConfigError
from cloudrec.reader.orders import MODES, epoch_order, file_order


def make_table(shard_sizes, seed=0, record_len=100):
    """A RecordTable-like object whose rows are deliberately NOT in file order."""
    shard = np.repeat(np.arange(len(shard_sizes), dtype=np.int32), shard_sizes)
    offset = np.concatenate([np.arange(s, dtype=np.int64) * record_len for s in shard_sizes]) \
        if shard_sizes else np.empty(0, np.int64)
    rows = np.random.default_rng(seed).permutation(len(shard))
    return SimpleNamespace(shard=shard[rows], offset=offset[rows], key=rows.astype(np.int64),
                           length=np.full(len(shard), record_len, np.int64))


def positions(order, base):
    """Position in file order of each record id in ``order``."""
    rank = np.empty(len(base), np.int64)
    rank[base] = np.arange(len(base))
    return rank[order]


opts = st.fixed_dictionaries({
    "block_size": st.integers(1, 40), "window_blocks": st.integers(1, 6), "buffer_size": st.integers(1, 60),
    "within": st.sampled_from(["shuffle", "interleave"])})


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 400), seed=st.integers(0, 2**32), epoch=st.integers(0, 1000),
       mode=st.sampled_from(MODES), o=opts)
def test_every_mode_is_a_permutation_and_deterministic(n, seed, epoch, mode, o):
    a = epoch_order(n, seed, epoch, mode, **o)
    assert a.dtype == np.int64 and a.shape == (n,)
    assert np.array_equal(np.sort(a), np.arange(n))
    assert np.array_equal(a, epoch_order(n, seed, epoch, mode, **o))


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=7), seed=st.integers(0, 1000),
       mode=st.sampled_from(MODES), o=opts)
def test_tables_and_datasets_give_permutations(sizes, seed, mode, o):
    t = make_table(sizes, seed)
    a = epoch_order(t, seed, 3, mode, **o)
    assert np.array_equal(np.sort(a), np.arange(sum(sizes)))
    assert np.array_equal(a, epoch_order(SimpleNamespace(table=t), seed, 3, mode, **o))


def test_none_is_file_order_shard_then_offset():
    t = make_table([5, 0, 7, 3], seed=4)
    o = epoch_order(t, 9, 2, "none")
    assert np.array_equal(o, file_order(t))
    keys = list(zip(t.shard[o].tolist(), t.offset[o].tolist()))
    assert keys == sorted(keys) and len(set(keys)) == 15
    assert np.array_equal(epoch_order(6, 1, 1, "none"), np.arange(6))


@pytest.mark.parametrize("mode,o", [("global", {}), ("block", {"block_size": 16, "window_blocks": 4}),
                                    ("shard", {"buffer_size": 64})])
def test_epochs_and_seeds_give_different_orders(mode, o):
    t = make_table([250, 250, 250, 250])
    orders = {(s, e): epoch_order(t, s, e, mode, **o).tobytes() for s in range(4) for e in range(4)}
    assert len(set(orders.values())) == 16


def test_global_is_uniform_over_small_permutations():
    counts = Counter(tuple(epoch_order(4, 7, e, "global")) for e in range(2400))
    assert len(counts) == 24
    assert min(counts.values()) > 50 and max(counts.values()) < 150


def test_block_mode_structure_window_of_one_block():
    t = make_table([37, 50, 13])
    bs = 8
    o = epoch_order(t, 1, 0, "block", block_size=bs, window_blocks=1)
    pos = positions(o, file_order(t))
    # every run of block_size positions (in emitted block order) is one contiguous block of file order
    i = 0
    seen_blocks = []
    while i < len(pos):
        b = pos[i] // bs
        size = min(bs, len(pos) - b * bs)
        chunk = pos[i:i + size]
        assert np.array_equal(np.sort(chunk), np.arange(b * bs, b * bs + size))
        seen_blocks.append(int(b))
        i += size
    assert sorted(seen_blocks) == list(range(-(-len(pos) // bs)))
    assert seen_blocks != sorted(seen_blocks)


def test_block_mode_window_holds_exactly_window_blocks_blocks():
    n, bs, wb = 1000, 10, 5
    o = epoch_order(n, 3, 1, "block", block_size=bs, window_blocks=wb)
    for w in range(n // (bs * wb)):
        chunk = o[w * bs * wb:(w + 1) * bs * wb]
        blocks = np.unique(chunk // bs)
        assert len(blocks) == wb
        assert all(np.count_nonzero(chunk // bs == b) == bs for b in blocks)
        # shuffled inside the window, not left as concatenated blocks
        assert not np.array_equal(chunk, np.concatenate([np.arange(b * bs, (b + 1) * bs) for b in blocks]))


def test_block_interleave_keeps_each_block_in_file_order_inside_a_mixed_window():
    n, bs, wb = 1003, 10, 4
    o = epoch_order(n, 8, 2, "block", block_size=bs, window_blocks=wb, within="interleave")
    assert np.array_equal(np.sort(o), np.arange(n))
    blocks = o // bs
    for b in range(-(-n // bs)):
        mine = o[blocks == b]
        assert np.array_equal(mine, np.arange(b * bs, min(n, (b + 1) * bs)))   # file order
    first = o[:bs * wb] // bs
    assert len(np.unique(first)) == wb
    assert any(first[i] != first[i + 1] for i in range(bs - 1))   # blocks are interleaved, not chained
    assert not np.array_equal(o, epoch_order(n, 8, 2, "block", block_size=bs, window_blocks=wb))


def test_block_size_from_bytes_when_table_has_lengths():
    t = make_table([400], record_len=1000)
    a = epoch_order(t, 0, 0, "block", block_bytes=20_000, window_blocks=1)   # 20 records a block
    pos = positions(a, file_order(t))
    assert all(len(np.unique(pos[i:i + 20] // 20)) == 1 for i in range(0, 400, 20))


def test_shard_mode_visits_shards_whole_in_a_permuted_order():
    sizes = [30, 30, 30, 30, 30, 30]
    t = make_table(sizes)
    shard_orders = set()
    for e in range(6):
        o = epoch_order(t, 5, e, "shard", buffer_size=30)
        sh = t.shard[o]
        # each buffer of 30 records is exactly one whole shard, shuffled inside
        for i in range(6):
            assert len(set(sh[i * 30:(i + 1) * 30].tolist())) == 1
        seq = tuple(sh[::30].tolist())
        assert sorted(seq) == list(range(6))
        shard_orders.add(seq)
    assert len(shard_orders) > 1
    o = epoch_order(t, 5, 0, "shard", buffer_size=1)   # buffer 1: each shard read in file order
    offs = t.offset[o].reshape(6, 30)
    assert all(np.array_equal(r, np.arange(30) * 100) for r in offs)


def _quality(o):
    n = len(o)
    disp = np.mean(np.abs(o - np.arange(n))) / n
    rho = np.corrcoef(o, np.arange(n))[0, 1]
    return disp, rho


@pytest.mark.parametrize("mode,o,sizes,tol", [
    ("global", {}, [2500] * 8, 0.05), ("block", {"block_size": 64, "window_blocks": 8}, [2500] * 8, 0.05),
    # shard mode mixes globally only as well as a permutation of its S shards (rho ~ 1/sqrt(S))
    ("shard", {"buffer_size": 512}, [50] * 400, 0.2)])
def test_shuffle_quality_near_uniform(mode, o, sizes, tol):
    t = make_table(sizes)
    order = epoch_order(t, 11, 0, mode, **o)
    disp, rho = _quality(positions(order, file_order(t)))
    assert abs(disp - 1 / 3) < tol and abs(rho) < tol


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="unknown order mode"):
        epoch_order(10, 0, 0, "random")
    for bad in ({"seed": -1, "epoch": 0}, {"seed": 0, "epoch": -2}, {"seed": 1.5, "epoch": 0}):
        with pytest.raises(ConfigError):
            epoch_order(10, bad["seed"], bad["epoch"])
    with pytest.raises(ConfigError):
        epoch_order(-3, 0, 0)
    with pytest.raises(ConfigError):
        epoch_order(10, 0, 0, "block", block_size=0)
    with pytest.raises(ConfigError):
        epoch_order(10, 0, 0, "shard", buffer_size=0)
    with pytest.raises(ConfigError, match="within"):
        epoch_order(10, 0, 0, "block", within="random")
    with pytest.raises(ConfigError, match="RecordTable"):
        epoch_order("s3://bucket/x.rec", 0, 0)


def test_orders_differ_across_modes_for_the_same_seed():
    outs = [epoch_order(500, 1, 1, m, block_size=10, buffer_size=50).tobytes() for m in MODES]
    assert len(set(outs)) == len(MODES)
    assert not any(np.array_equal(a, b) for a, b in itertools.combinations(
        [epoch_order(500, 1, e, "global") for e in range(5)], 2))


from cloudrec.reader.bijection import FeistelPermutation, derive_keys  # noqa: E402
from cloudrec.reader.orders import EXACT_GLOBAL_BELOW, order_plan  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 1000, 4097, 65_537])
def test_feistel_is_a_permutation_of_any_size(n):
    f = FeistelPermutation(n, derive_keys(1, 2, 3, 12))
    out = f(np.arange(n))
    assert np.array_equal(np.sort(out), np.arange(n))
    assert np.array_equal(f(np.arange(n)[::-1]), out[::-1])        # position by position
    with pytest.raises(ValueError):
        f(np.array([n]))


def test_large_global_orders_are_lazy_feistel_permutations_of_uniform_quality():
    n = EXACT_GLOBAL_BELOW * 3 + 11
    a, b = epoch_order(n, 3, 0, "global"), epoch_order(n, 3, 1, "global")
    assert np.array_equal(np.sort(a), np.arange(n)) and not np.array_equal(a, b)
    disp, rho = _quality(a)
    assert abs(disp - 1 / 3) < 0.01 and abs(rho) < 0.01
    # file neighbours are not emitted near each other (local mixing), as for a uniform permutation
    where = np.empty(n, np.int64)
    where[a] = np.arange(n)
    assert np.mean(np.abs(np.diff(where)) <= 256) < 0.01
    plan = order_plan(n, 3, 0, "global")
    for lo, hi in [(0, 10), (n - 7, n), (12_345, 23_456)]:
        assert np.array_equal(plan.take(lo, hi), a[lo:hi])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 5000), mode=st.sampled_from(MODES), o=opts, data=st.data())
def test_plan_take_equals_slices_of_the_full_order(n, mode, o, data):
    full = epoch_order(n, 5, 4, mode, **o)
    plan = order_plan(n, 5, 4, mode, **o)
    assert len(plan) == n
    for _ in range(5):
        lo = data.draw(st.integers(0, n))
        hi = data.draw(st.integers(lo, n))
        got = plan.take(lo, hi)
        assert got.dtype == np.int32 and np.array_equal(got, full[lo:hi])


def test_plans_on_tables_not_in_file_order_match_the_full_order():
    t = make_table([300, 0, 170, 45], seed=3)
    for mode in MODES:
        full = epoch_order(t, 2, 1, mode, block_size=16, window_blocks=3, buffer_size=50)
        plan = order_plan(t, 2, 1, mode, block_size=16, window_blocks=3, buffer_size=50)
        assert np.array_equal(np.concatenate([plan.take(i, i + 37) for i in range(0, 515, 37)]), full)
