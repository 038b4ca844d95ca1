"""Plan byte-range requests for a set of records: coalesce neighbours, cap sizes.

Pure numpy, no IO.  Records of the same shard whose gap is at most ``max_gap``
bytes are merged into one request, as long as the request stays within
``max_request`` bytes (a single record larger than that gets its own request).
Object stores charge a round trip per GET; reading a small gap is cheaper.
``max_waste`` bounds what the gaps may cost in bytes: in each shard the merged
gaps total at most that fraction of the records' own bytes, the smallest gaps
merged first (the fewest GETs for the bytes allowed).  A ``global`` order
without a cache merges across records other workers read, so its default
(unbounded) reads up to ~1.7x the dataset; ``max_waste=0.02`` keeps it within
2% at the price of about one GET per record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional

import numpy as np

DEFAULT_MAX_GAP = 256 << 10
DEFAULT_MAX_REQUEST = 16 << 20


class Request(NamedTuple):
    """One byte-range GET: ``[start, end)`` of shard ``shard``."""

    shard: int
    start: int
    end: int


@dataclass
class RangePlan:
    """Requests (``shard``, ``start``, ``end`` arrays) and, per input record,
    the request that holds it (``record_request``) and its position inside
    that request's bytes (``record_pos``)."""

    shard: np.ndarray
    start: np.ndarray
    end: np.ndarray
    record_request: np.ndarray
    record_pos: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def __iter__(self) -> Iterator[Request]:
        for s, a, b in zip(self.shard.tolist(), self.start.tolist(), self.end.tolist()):
            yield Request(s, a, b)

    @property
    def nbytes(self) -> int:
        """Bytes all requests read (records plus the gaps merged in)."""
        return int((self.end - self.start).sum())


def within_waste(group: np.ndarray, gap: np.ndarray, merge: np.ndarray, lengths: np.ndarray,
                 max_waste: float) -> np.ndarray:
    """``merge`` kept only where each group's merged gaps stay within ``max_waste`` x its
    records' bytes, smallest gaps first.  Arrays are per record, sorted by (group,
    offset); ``group`` numbers groups densely from 0 and ``gap[i]`` is the gap before
    record ``i`` (touching or overlapping records, ``gap <= 0``, cost nothing)."""
    cand = np.flatnonzero(merge & (gap > 0))
    if cand.size == 0:
        return merge
    budget = max_waste * np.bincount(group, weights=lengths)
    g = group[cand]
    order = np.lexsort((gap[cand], g))
    c, g = cand[order], g[order]
    spent = np.cumsum(gap[c])
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    spent -= np.repeat(spent[first] - gap[c[first]], np.diff(np.r_[first, len(c)]))
    out = merge.copy()
    out[c[spent > budget[g]]] = False
    return out


def plan_ranges(shard_ids, offsets, lengths, max_gap: int = DEFAULT_MAX_GAP,
                max_request: int = DEFAULT_MAX_REQUEST,
                max_waste: Optional[float] = None) -> RangePlan:
    """Merge records into requests; inputs are parallel arrays, one entry per record.

    Duplicates and overlaps are fine (they share bytes).  Requests come out
    sorted by (shard, start).  ``max_gap=-1`` disables merging altogether;
    ``max_waste`` caps the gap bytes per shard (see the module docstring).
    """
    shard_ids = np.asarray(shard_ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = offsets.shape[0]
    if not (shard_ids.shape[0] == n == lengths.shape[0]):
        raise ValueError("shard_ids, offsets and lengths must have the same length")
    if max_request < 1:
        raise ValueError("max_request must be >= 1")
    empty = np.zeros(0, np.int64)
    if n == 0:
        return RangePlan(empty.astype(np.int32), empty, empty, empty, empty)
    order = np.lexsort((offsets, shard_ids))
    s_sh, s_off = shard_ids[order], offsets[order]
    s_end = s_off + lengths[order]
    new_shard = np.ones(n, bool)
    new_shard[1:] = s_sh[1:] != s_sh[:-1]
    shard_starts = np.flatnonzero(new_shard)
    # reach[i]: furthest end of records up to i in the same shard (handles overlaps)
    reach = np.empty(n, np.int64)
    prev_reach = np.empty(n, np.int64)
    for a, b in zip(shard_starts.tolist(), shard_starts[1:].tolist() + [n]):
        reach[a:b] = np.maximum.accumulate(s_end[a:b])
        prev_reach[a] = s_off[a]
        prev_reach[a + 1:b] = reach[a:b - 1]
    gap = s_off - prev_reach
    breaks = new_shard | (gap > max_gap)
    if max_waste is not None:
        breaks = ~within_waste(np.cumsum(new_shard) - 1, gap, ~breaks, s_end - s_off, max_waste)
    seg_starts = np.flatnonzero(breaks)
    seg_ends = np.append(seg_starts[1:], n)

    req_sh, req_a, req_b = [], [], []
    rec_req_sorted = np.empty(n, np.int64)
    for a, b in zip(seg_starts.tolist(), seg_ends.tolist()):
        i = a
        while i < b:
            start = int(s_off[i])
            # one past the last record whose reach stays within start + max_request
            j = a + int(np.searchsorted(reach[a:b], start + max_request, side="right"))
            j = min(b, max(j, i + 1))
            while j < b and s_off[j] < reach[j - 1]:  # overlapping spans share a request
                j += 1
            req_sh.append(int(s_sh[i]))
            req_a.append(start)
            req_b.append(int(reach[j - 1]))
            rec_req_sorted[i:j] = len(req_a) - 1
            i = j
    req_start = np.asarray(req_a, np.int64)
    rec_request = np.empty(n, np.int64)
    rec_request[order] = rec_req_sorted
    rec_pos = offsets - req_start[rec_request]
    return RangePlan(np.asarray(req_sh, np.int32), req_start, np.asarray(req_b, np.int64),
                     rec_request, rec_pos)


def plan_split(shard_ids, offsets, lengths, touch_only, max_gap: int = DEFAULT_MAX_GAP,
               max_request: int = DEFAULT_MAX_REQUEST,
               max_waste: Optional[float] = None) -> RangePlan:
    """:func:`plan_ranges` where records flagged ``touch_only`` merge only with flagged
    records they touch (``max_gap`` 0) and the others across gaps up to ``max_gap``.

    The simulator plans many readers' windows in one call this way: a reader
    whose windows follow the order's shuffle windows merges only touching
    records (:meth:`RecordFetcher.fetch`), the others merge gaps.
    """
    touch_only = np.asarray(touch_only, dtype=bool)
    if not touch_only.any():
        return plan_ranges(shard_ids, offsets, lengths, max_gap, max_request, max_waste)
    shard_ids = np.asarray(shard_ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    own = np.flatnonzero(~touch_only)
    other = np.flatnonzero(touch_only)
    a = plan_ranges(shard_ids[own], offsets[own], lengths[own], max_gap, max_request, max_waste)
    b = plan_ranges(shard_ids[other], offsets[other], lengths[other], 0, max_request)
    n = offsets.shape[0]
    record_request = np.empty(n, np.int64)
    record_pos = np.empty(n, np.int64)
    record_request[own], record_pos[own] = a.record_request, a.record_pos
    record_request[other], record_pos[other] = b.record_request + len(a), b.record_pos
    return RangePlan(np.concatenate([a.shard, b.shard]), np.concatenate([a.start, b.start]),
                     np.concatenate([a.end, b.end]), record_request, record_pos)
