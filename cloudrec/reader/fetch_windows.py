"""How RecordFetcher cuts an id stream into look-ahead windows (a mixin of
:class:`cloudrec.reader.fetch.RecordFetcher`; the simulator calls the same cutting).

A window is planned as one set of ranged requests, so where windows end decides
which neighbours can merge: ids that fit in the read-ahead are one window; with an
order's ``chunk_starts`` (where its shuffle windows begin) windows end only there,
so a block's records of this reader are planned together; otherwise windows are
runs of about ``window_bytes`` of records.
"""
from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator, List, Optional

import numpy as np

__all__ = ["FetchWindows"]

_ID_BLOCK = 4096


def _byte_cuts(csum: np.ndarray, window: int) -> List[int]:
    """Ends of the full ``window``-byte runs of records whose cumulative sizes are ``csum``
    (at least one record each); the records after the last end are a partial run."""
    out: List[int] = []
    prev, n = 0, csum.shape[0]
    if n == 0:
        return out
    for c in np.searchsorted(csum, np.arange(1, int(csum[-1] // window) + 1) * window,
                             side="right").tolist():
        c = max(c, prev + 1)
        if c > n:
            break
        out.append(c)
        prev = c
    return out


class FetchWindows:
    """Window cutting over the fetcher's ``table``, ``readahead_bytes`` and ``window_bytes``."""

    table: object
    readahead_bytes: int
    window_bytes: int

    def _id_blocks(self, record_ids: Iterable[int]) -> Iterator[np.ndarray]:
        if isinstance(record_ids, np.ndarray) or isinstance(record_ids, (list, tuple, range)):
            arr = np.asarray(record_ids, dtype=np.int64).reshape(-1)
            for i in range(0, arr.shape[0], _ID_BLOCK):
                yield arr[i:i + _ID_BLOCK]
            return
        it = iter(record_ids)
        while True:
            block = np.fromiter((int(x) for x in islice(it, _ID_BLOCK)), dtype=np.int64)
            if block.size == 0:
                return
            yield block

    def _windows(self, record_ids: Iterable[int],
                 chunk_starts: Optional[np.ndarray] = None) -> Iterator[np.ndarray]:
        """Cut the id stream into runs of about ``window_bytes`` of records; with
        ``chunk_starts`` (positions where a shuffle window of the order begins) only there.
        Ids that fit in the read-ahead all at once are one window: planned together,
        neighbours merge across the order's shuffle windows (a small dataset read in
        ``block`` order is then a few large GETs, like whole objects; streamed GETs hand
        out each record as its bytes arrive, so it costs no first-record latency)."""
        if isinstance(record_ids, np.ndarray) and record_ids.size:
            ids = self._checked(record_ids.reshape(-1))
            if int(self.table.length[ids].sum()) <= self.readahead_bytes:
                yield ids
                return
        if chunk_starts is not None and len(chunk_starts) and isinstance(record_ids, np.ndarray):
            yield from self._aligned_windows(self._checked(record_ids.reshape(-1)), chunk_starts)
            return
        lengths = self.table.length
        carry = np.zeros(0, np.int64)
        for block in self._id_blocks(record_ids):
            self._checked(block)
            ids = np.concatenate([carry, block]) if carry.size else block
            prev = 0
            for c in _byte_cuts(np.cumsum(lengths[ids]), self.window_bytes):
                yield ids[prev:c]
                prev = c
            carry = ids[prev:]
        if carry.size:
            yield carry

    def _checked(self, ids: np.ndarray) -> np.ndarray:
        n = len(self.table)
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise IndexError(f"record id {int(ids[np.flatnonzero(bad)[0]])} out of range [0, {n})")
        return ids.astype(np.int64, copy=False)

    def _aligned_windows(self, ids: np.ndarray, chunk_starts: np.ndarray) -> Iterator[np.ndarray]:
        """Whole chunks (shuffle windows) per fetch window, as many as fit in
        ``window_bytes`` (at least one): a block's records of this reader are then all
        planned together, so no gap merged in one window is fetched again in the next."""
        starts = np.asarray(chunk_starts, np.int64)
        cuts = np.concatenate([[0], starts[(starts > 0) & (starts < ids.shape[0])],
                               [ids.shape[0]]])
        csum = np.concatenate([[0], np.cumsum(self.table.length[ids])])
        a = 0
        for i in range(1, len(cuts)):
            if i == len(cuts) - 1 or csum[cuts[i + 1]] - csum[cuts[a]] > self.window_bytes:
                if i == a + 1 and csum[cuts[i]] - csum[cuts[a]] > self.readahead_bytes:
                    # one chunk larger than the whole read-ahead (a big shard-order buffer):
                    # cut it by bytes, so memory stays bounded (touching-only merging keeps
                    # the bytes exact, at more requests)
                    yield from self._byte_windows(ids[cuts[a]:cuts[i]])
                else:
                    yield ids[cuts[a]:cuts[i]]
                a = i

    def _byte_windows(self, ids: np.ndarray) -> Iterator[np.ndarray]:
        prev = 0
        for c in _byte_cuts(np.cumsum(self.table.length[ids]), self.window_bytes) + [ids.shape[0]]:
            if c > prev:
                yield ids[prev:c]
                prev = c
