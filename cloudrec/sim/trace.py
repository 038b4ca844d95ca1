"""The requests one epoch makes, computed by the readers' own code (no IO).

For every rank x DataLoader worker this runs what a worker of
``cloudrec.torch.RecordIterableDataset`` runs: :func:`partition_epoch` of the
epoch's order (from :class:`EpochSampler`), then :class:`RecordFetcher`'s own
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
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from cloudrec.reader.fetch import RecordFetcher
from cloudrec.reader.partition import partition_epoch
from cloudrec.reader.planner import plan_ranges


@dataclass
class StreamIds:
    """One rank x worker's records in the order it reads them, cut into fetch windows."""

    rank: int
    worker: int
    ids: np.ndarray
    window: np.ndarray     # fetch window of each position (0, 0, ..., 1, ...)
    batch_size: int


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


def fetch_windows(fetcher: RecordFetcher, ids: np.ndarray) -> np.ndarray:
    """Window number of each position of ``ids``, cut by the fetcher's own code."""
    sizes = [len(w) for w in fetcher._windows(ids)]  # the reader's cutting, not a copy
    return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)


def streams(order: np.ndarray, fetcher: RecordFetcher, *, world_size: int, num_workers: int,
            batch_size: int, last: str = "pad",
            ranks: Optional[List[int]] = None) -> Iterator[StreamIds]:
    """Each (rank, worker)'s ids as ``RecordIterableDataset.__iter__`` computes them."""
    for rank in (range(world_size) if ranks is None else ranks):
        for worker in range(num_workers):
            sl = partition_epoch(order, rank=rank, world_size=world_size, worker=worker,
                                 num_workers=num_workers, batch_size=batch_size, last=last)
            yield StreamIds(rank, worker, sl.ids, fetch_windows(fetcher, sl.ids), batch_size)


def _sort_key(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Indices sorting by (major, minor): one int64 argsort when it fits, else lexsort."""
    span = int(minor.max()) + 1 if minor.size else 1
    if minor.size and int(major.max()) < (1 << 62) // span:
        return np.argsort(major * span + minor)  # equal keys are identical records
    return np.lexsort((minor, major))


def plan_streams(table: Any, stream_ids: List[StreamIds], max_gap: int,
                 max_request: int) -> Requests:
    """All requests of ``stream_ids`` (see module doc); ``stream`` numbers index the list."""
    lens = [len(s.ids) for s in stream_ids]
    if not stream_ids or sum(lens) == 0:
        z = np.zeros(0, np.int64)
        return Requests(z.astype(np.int32), z.astype(np.int32), z.astype(np.int32), z, z, z)
    ids = np.concatenate([s.ids for s in stream_ids])
    stream = np.repeat(np.arange(len(stream_ids), dtype=np.int32), lens)
    window = np.concatenate([s.window for s in stream_ids])
    firsts = np.cumsum(lens) - np.asarray(lens)
    pos = np.arange(len(ids), dtype=np.int64) - np.repeat(firsts, lens)
    nshards = int(table.shard.max()) + 1 if len(table) else 1
    # one group per (stream, window, shard); windows numbered densely over all streams
    wid = np.zeros(len(ids), np.int64)
    np.cumsum((stream[1:] != stream[:-1]) | (window[1:] != window[:-1]), out=wid[1:])
    group = wid * nshards + table.shard[ids].astype(np.int64)
    off = table.offset[ids]
    end = off + table.length[ids]
    srt = _sort_key(group, off)
    g, o, e = group[srt], off[srt], end[srt]
    new_group = np.ones(len(g), bool)
    new_group[1:] = g[1:] != g[:-1]
    # records of a shard are disjoint or identical (a pad repeat), so sorted by offset their
    # ends rise and the previous end is the reach plan_ranges compares against
    if not bool(np.all((e[1:] >= e[:-1]) | new_group[1:])):
        return _plan_all(table, ids, stream, window, pos, group, off, end, max_gap, max_request)
    opens = new_group.copy()
    opens[1:] |= (o[1:] - e[:-1]) > max_gap          # a merged segment starts here
    seg_first = np.flatnonzero(opens)
    seg_last = np.append(seg_first[1:], len(g)) - 1
    # a segment spanning at most max_request is one request, as plan_ranges makes it
    fits = (e[seg_last] - o[seg_first]) <= max_request
    sp = pos[srt]
    seg_need = np.minimum.reduceat(sp, seg_first)
    f_first, f_last = seg_first[fits], seg_last[fits]
    head = srt[f_first]
    parts = [(stream[head], window[head], table.shard[ids[head]], o[f_first], e[f_last],
              seg_need[fits])]
    if not fits.all():   # long segments: plan_ranges itself cuts them at max_request
        seg_of = np.cumsum(opens) - 1
        rest = srt[~fits[seg_of]]
        parts.append(_planned(table, ids, stream, window, pos, group[rest], off[rest],
                              end[rest], rest, max_gap, max_request))
    return _ordered(parts)


def _planned(table, ids, stream, window, pos, group, off, end, rest, max_gap, max_request):
    plan = plan_ranges(group, off, end - off, max_gap, max_request)
    need = np.full(len(plan), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(need, plan.record_request, pos[rest])
    first = np.full(len(plan), -1, np.int64)
    first[plan.record_request] = rest            # any record of the request: same group
    return (stream[first], window[first], table.shard[ids[first]], plan.start, plan.end, need)


def _plan_all(table, ids, stream, window, pos, group, off, end, max_gap, max_request) -> Requests:
    """Overlapping records (a malformed table): plan_ranges on everything."""
    rest = np.arange(len(ids))
    return _ordered([_planned(table, ids, stream, window, pos, group, off, end, rest,
                              max_gap, max_request)])


def _ordered(parts) -> Requests:
    """Requests in submission order: stream, then window, then first use in the window."""
    cols = [np.concatenate(c) for c in zip(*parts)]
    s_, w_, sh_, a_, b_, n_ = cols
    sw = s_.astype(np.int64) * (int(w_.max()) + 1) + w_
    o2 = _sort_key(sw, n_)
    return Requests(s_[o2], w_[o2], sh_[o2].astype(np.int32, copy=False), a_[o2], b_[o2], n_[o2])


def plan_streams_reference(table: Any, stream_ids: List[StreamIds], max_gap: int,
                           max_request: int) -> List[Tuple[int, int, int, int, int]]:
    """(stream, window, shard, start, end) from one ``plan_ranges`` call per window, as
    ``RecordFetcher._start_window`` does: slow, for checking :func:`plan_streams`."""
    out = []
    for si, s in enumerate(stream_ids):
        for w in np.unique(s.window).tolist():
            ids = s.ids[s.window == w]
            plan = plan_ranges(table.shard[ids], table.offset[ids], table.length[ids],
                               max_gap, max_request)
            first = np.full(len(plan), len(ids), np.int64)
            np.minimum.at(first, plan.record_request, np.arange(len(ids)))
            for r in np.argsort(first, kind="stable").tolist():
                out.append((si, w, int(plan.shard[r]), int(plan.start[r]), int(plan.end[r])))
    return out
