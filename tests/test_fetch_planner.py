"""plan_ranges: pure planning of coalesced byte-range requests."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cloudrec.reader.planner import plan_ranges


def _check_plan(sh, off, ln, plan, max_gap, max_request):
    sh, off, ln = map(np.asarray, (sh, off, ln))
    # every record lies inside its request, of its own shard
    r = plan.record_request
    assert (plan.shard[r] == sh).all()
    assert (plan.start[r] <= off).all()
    assert (off + ln <= plan.end[r]).all()
    assert (plan.record_pos == off - plan.start[r]).all()
    # requests of one shard do not overlap; sorted by (shard, start)
    keys = list(zip(plan.shard.tolist(), plan.start.tolist()))
    assert keys == sorted(keys)
    for i in range(1, len(plan)):
        if plan.shard[i] == plan.shard[i - 1]:
            assert plan.start[i] >= plan.end[i - 1]
    # the size cap holds except for requests holding one oversized record span
    for i in range(len(plan)):
        if plan.end[i] - plan.start[i] > max_request:
            members = np.flatnonzero(r == i)
            assert (off[members] == plan.start[i]).all()


def test_neighbours_merge_and_far_records_do_not():
    # shard 0: records at 0(100), 100(100), 250(50) -> gap 50; 10_000(10) far away
    plan = plan_ranges([0, 0, 0, 0], [0, 100, 250, 10_000], [100, 100, 50, 10],
                       max_gap=64, max_request=1 << 20)
    assert list(plan) == [(0, 0, 300), (0, 10_000, 10_010)]
    assert plan.record_request.tolist() == [0, 0, 0, 1]
    assert plan.record_pos.tolist() == [0, 100, 250, 0]
    assert plan.nbytes == 310


def test_gap_bound_is_inclusive_and_shards_never_merge():
    plan = plan_ranges([0, 0, 1], [0, 164, 100], [100, 10, 10], max_gap=64, max_request=1 << 20)
    assert list(plan) == [(0, 0, 174), (1, 100, 110)]
    plan = plan_ranges([0, 0], [0, 165], [100, 10], max_gap=64, max_request=1 << 20)
    assert len(plan) == 2


def test_size_cap_splits_and_oversized_record_stands_alone():
    off = np.arange(10) * 100
    plan = plan_ranges(np.zeros(10), off, np.full(10, 100), max_gap=0, max_request=300)
    assert [(r.start, r.end) for r in plan] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    plan = plan_ranges([0, 0, 0], [0, 100, 5000], [100, 4900, 10], max_gap=10**9, max_request=1000)
    assert [(r.start, r.end) for r in plan] == [(0, 100), (100, 5000), (5000, 5010)]


def test_unsorted_input_and_duplicates_map_back_to_input_order():
    plan = plan_ranges([2, 0, 2, 0, 2], [40, 0, 0, 0, 40], [10, 8, 40, 8, 10],
                       max_gap=0, max_request=1000)
    assert list(plan) == [(0, 0, 8), (2, 0, 50)]
    assert plan.record_request.tolist() == [1, 0, 1, 0, 1]
    assert plan.record_pos.tolist() == [40, 0, 0, 0, 40]


def test_no_merge_with_negative_gap_and_empty_input():
    plan = plan_ranges([0, 0], [0, 8], [8, 8], max_gap=-1, max_request=100)
    assert len(plan) == 2
    assert len(plan_ranges([], [], [], 10, 10)) == 0
    with pytest.raises(ValueError):
        plan_ranges([0], [0, 1], [1], 10, 10)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(1, 40)),
                min_size=1, max_size=60),
       st.integers(-1, 200), st.integers(1, 500))
def test_plan_invariants_hold_for_random_inputs(recs, max_gap, max_request):
    # records laid out as in a real shard: slots of 64 bytes, lengths within a slot
    sh = [r[0] for r in recs]
    off = [r[1] * 64 for r in recs]
    ln = [r[2] for r in recs]
    plan = plan_ranges(sh, off, ln, max_gap, max_request)
    _check_plan(sh, off, ln, plan, max_gap, max_request)
    # gaps inside one request never exceed max_gap (with >=0 gaps between distinct spans)
    for i in range(len(plan)):
        m = np.flatnonzero(plan.record_request == i)
        spans = sorted(set((off[j], off[j] + ln[j]) for j in m))
        reach = spans[0][1]
        for a, b in spans[1:]:
            assert a - reach <= max(max_gap, 0) or a <= reach
            reach = max(reach, b)


def _gap_bytes_per_shard(sh, off, ln, plan):
    """Bytes the plan reads beyond the distinct records, per shard."""
    out = {}
    for s in set(sh):
        distinct = {(o, o + n) for k, o, n in zip(sh, off, ln) if k == s}
        covered = sum(b - a for a, b in distinct)
        read = int(sum(plan.end[i] - plan.start[i] for i in range(len(plan)) if plan.shard[i] == s))
        out[s] = (read - covered, covered)
    return out


def test_max_waste_merges_the_smallest_gaps_first_within_the_budget():
    # gaps of 10, 1000, 40 and 100 bytes between five 1000-byte records: 2% of 5000 = 100
    off = [0, 1010, 3010, 4050, 5150]
    plan = plan_ranges([0] * 5, off, [1000] * 5, max_gap=1 << 20, max_waste=0.02)
    assert list(zip(plan.start.tolist(), plan.end.tolist())) == \
        [(0, 2010), (3010, 5050), (5150, 6150)]           # the 10 and 40 gaps: 50 bytes spent
    # a budget of 0.03 (150) takes the 100 gap too; 0 merges only touching records
    plan = plan_ranges([0] * 5, off, [1000] * 5, max_gap=1 << 20, max_waste=0.03)
    assert list(zip(plan.start.tolist(), plan.end.tolist())) == [(0, 2010), (3010, 6150)]
    plan = plan_ranges([0] * 3, [0, 1000, 2500], [1000] * 3, max_gap=1 << 20, max_waste=0.0)
    assert list(zip(plan.start.tolist(), plan.end.tolist())) == [(0, 2000), (2500, 3500)]
    # max_gap still applies: the 1000 gap is above it even with budget to spare
    plan = plan_ranges([0] * 5, off, [1000] * 5, max_gap=500, max_waste=1.0)
    assert len(plan) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(1, 40)),
                min_size=1, max_size=60),
       st.integers(-1, 200), st.integers(1, 500), st.sampled_from([0.0, 0.02, 0.1, 0.5, 10.0]))
def test_max_waste_bounds_the_gap_bytes_of_every_shard(recs, max_gap, max_request, waste):
    sh = [r[0] for r in recs]
    off = [r[1] * 64 for r in recs]
    ln = [r[2] for r in recs]
    plan = plan_ranges(sh, off, ln, max_gap, max_request, max_waste=waste)
    _check_plan(sh, off, ln, plan, max_gap, max_request)
    for s, (gaps, covered) in _gap_bytes_per_shard(sh, off, ln, plan).items():
        # the budget counts each listed record (a duplicate twice), so bound by the listed bytes
        listed = sum(n for k, n in zip(sh, ln) if k == s)
        assert gaps <= waste * listed + 1e-9
    unbounded = plan_ranges(sh, off, ln, max_gap, max_request)
    assert len(plan) >= len(unbounded)
    if waste >= 10.0 and max_request >= 500:   # budget above any gap total: the same plan
        assert plan.start.tolist() == unbounded.start.tolist()
