"""The requests one epoch makes, computed by the readers' own code (no IO).

For every rank x DataLoader worker this runs what a worker of
``cloudrec.torch.RecordIterableDataset`` runs: its rank's
:meth:`EpochSampler.epoch_slice` (the lazy order and worker spans), then :class:`RecordFetcher`'s own
window cutting, then the planner's merge rules.  The counts are therefore the
code's, not a model of it.  The planner is evaluated for all windows of all
workers at once: records that share no (window, shard) neighbour within
``max_gap`` become one request each (what :func:`plan_ranges` gives a lone
record), and every other record goes through :func:`plan_ranges` itself, in one
call keyed by (stream, window, shard) so that nothing merges across windows.
``tests/test_sim.py`` checks this against per-window ``plan_ranges`` calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np

from cloudrec.reader.fetch import RecordFetcher
from cloudrec.reader.planner import plan_ranges, plan_split, within_waste


@dataclass
class StreamIds:
    """One rank x worker's records in the order it reads them, cut into fetch windows."""

    rank: int
    worker: int
    ids: np.ndarray
    window: np.ndarray     # fetch window of each position (0, 0, ..., 1, ...)
    batch_size: int
    touching_only: bool = False  # a block/shard slice: records merged only where they touch


@dataclass
class Requests:
    """Every byte-range GET of an epoch, in the order each stream submits them.

    Parallel arrays; ``need`` is the stream position of the first record the
    request serves (so the first batch waits for requests with ``need < B``).
    """

    stream: np.ndarray
    window: np.ndarray
    shard: np.ndarray
    start: np.ndarray
    end: np.ndarray
    need: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def nbytes(self) -> np.ndarray:
        return self.end - self.start


def fetch_windows(fetcher: RecordFetcher, ids: np.ndarray,
                  chunk_starts: Optional[np.ndarray] = None) -> np.ndarray:
    """Window number of each position of ``ids``, cut by the fetcher's own code."""
    sizes = [len(w) for w in fetcher._windows(ids, chunk_starts)]  # the reader's cutting
    return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)


def streams(sampler_for: Callable[[int], Any], fetcher: RecordFetcher, *, num_workers: int,
            ranks: List[int]) -> Iterator[StreamIds]:
    """Each (rank, worker)'s ids as ``RecordIterableDataset.__iter__`` computes them:
    ``sampler_for(rank)`` is that rank's EpochSampler, ``epoch_slice(worker, K)`` its share."""
    for rank in ranks:
        sampler = sampler_for(rank)
        for worker in range(num_workers):
            sl = sampler.epoch_slice(worker, num_workers)
            # with the hint RecordIterableDataset passes to RecordFetcher.fetch
            yield StreamIds(rank, worker, sl.ids, fetch_windows(fetcher, sl.ids, sl.chunk_starts),
                            sl.batch_size, sl.exclusive is not None)


def _sort_key(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Indices sorting by (major, minor): one int64 argsort when it fits, else lexsort."""
    span = int(minor.max()) + 1 if minor.size else 1
    if minor.size and int(major.max()) < (1 << 62) // span:
        return np.argsort(major * span + minor)  # equal keys are identical records
    return np.lexsort((minor, major))


def plan_streams(table: Any, stream_ids: List[StreamIds], max_gap: int,
                 max_request: int, max_waste: Optional[float] = None) -> Requests:
    """All requests of ``stream_ids`` (see module doc); ``stream`` numbers index the list."""
    lens = np.array([len(s.ids) for s in stream_ids], np.int64)
    if not stream_ids or lens.sum() == 0:
        z = np.zeros(0, np.int64)
        return Requests(z.astype(np.int32), z.astype(np.int32), z.astype(np.int32), z, z, z)
    ids = np.concatenate([s.ids for s in stream_ids])
    n = len(ids)
    firsts = np.cumsum(lens) - lens
    stream = np.repeat(np.arange(len(stream_ids), dtype=np.int32), lens)
    window = np.concatenate([s.window for s in stream_ids])
    nwin = np.array([int(s.window[-1]) + 1 if len(s.window) else 0 for s in stream_ids], np.int64)
    # one group per (stream, window, shard); windows numbered densely over all streams
    group = window + np.repeat(np.cumsum(nwin) - nwin, lens)
    # streams whose windows are aligned to shuffle windows merge only touching records
    touch_only = np.repeat(np.array([s.touching_only for s in stream_ids], bool), lens)
    nshards = int(table.shard.max()) + 1 if len(table) else 1
    group *= nshards
    group += table.shard[ids]
    off = table.offset[ids]
    end = off + table.length[ids]
    srt = _sort_key(group, off)
    g, o, e = group[srt], off[srt], end[srt]
    new_group = np.empty(n, bool)
    new_group[0] = True
    np.not_equal(g[1:], g[:-1], out=new_group[1:])
    del g
    # records of a shard are disjoint or identical (a pad repeat), so sorted by offset their
    # ends rise and the previous end is the reach plan_ranges compares against
    if not bool(np.all((e[1:] >= e[:-1]) | new_group[1:])):
        heads, starts, ends = _planned(group, off, end, np.arange(n), max_gap, max_request,
                                       touch_only, max_waste)
    else:
        gid = np.cumsum(new_group) - 1 if max_waste is not None else None
        opens = new_group
        gap_ok = np.where(touch_only[srt[1:]], 0, max_gap)
        opens[1:] |= (o[1:] - e[:-1]) > gap_ok          # a merged segment starts here
        if max_waste is not None:   # per (stream, window, shard), as the fetcher's windows
            gap = np.zeros(n, np.int64)
            gap[1:] = o[1:] - e[:-1]
            opens = ~within_waste(gid, gap, ~opens, e - o, max_waste)
        seg_first = np.flatnonzero(opens)
        seg_last = np.append(seg_first[1:], n) - 1
        # a segment spanning at most max_request is one request, as plan_ranges makes it
        fits = (e[seg_last] - o[seg_first]) <= max_request
        # the request's first-needed record: the smallest stream position = global index
        seg_head = np.minimum.reduceat(srt, seg_first)
        heads, starts, ends = [seg_head[fits]], [o[seg_first[fits]]], [e[seg_last[fits]]]
        if not fits.all():   # long segments: plan_ranges itself cuts them at max_request
            seg_of = np.cumsum(opens) - 1
            long_ = ~fits[seg_of]
            rest = srt[long_]
            if max_waste is None:
                h, a_, b_ = _planned(group[rest], off[rest], end[rest], rest, max_gap,
                                     max_request, touch_only[rest])
            else:   # the budget was spent over whole groups: keep its segments, only cut them
                h, a_, b_ = _planned(seg_of[long_], off[rest], end[rest], rest, 1 << 62,
                                     max_request, np.zeros(len(rest), bool))
            heads += h
            starts += a_
            ends += b_
    head = np.concatenate(heads)
    start, stop = np.concatenate(starts), np.concatenate(ends)
    # the fetcher submits window by window, each window's requests by first use: that is
    # the order of the first-needed record's global index (no sort needed)
    slot = np.full(n, -1, np.int64)
    slot[head] = np.arange(len(head))
    o2 = slot[slot >= 0]
    hd = head[o2]
    st = stream[hd]
    return Requests(st, window[hd], table.shard[ids[hd]].astype(np.int32, copy=False),
                    start[o2], stop[o2], hd - firsts[st])


def _planned(group, off, end, rest, max_gap, max_request, touch_only, max_waste=None):
    """plan_split itself on these records: (first-needed global index, start, end) lists."""
    plan = plan_split(group, off, end - off, touch_only, max_gap, max_request, max_waste)
    head = np.full(len(plan), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(head, plan.record_request, rest)
    return [head], [plan.start], [plan.end]


def plan_streams_reference(table: Any, stream_ids: List[StreamIds], max_gap: int,
                           max_request: int, max_waste: Optional[float] = None
                           ) -> List[Tuple[int, int, int, int, int]]:
    """(stream, window, shard, start, end) from one ``plan_ranges`` call per window, as
    ``RecordFetcher._start_window`` does: slow, for checking :func:`plan_streams`."""
    out = []
    for si, s in enumerate(stream_ids):
        for w in np.unique(s.window).tolist():
            ids = s.ids[s.window == w]
            plan = plan_ranges(table.shard[ids], table.offset[ids], table.length[ids],
                               0 if s.touching_only else max_gap, max_request, max_waste)
            first = np.full(len(plan), len(ids), np.int64)
            np.minimum.at(first, plan.record_request, np.arange(len(ids)))
            for r in np.argsort(first, kind="stable").tolist():
                out.append((si, w, int(plan.shard[r]), int(plan.start[r]), int(plan.end[r])))
    return out
