"""RecordFetcher: records of a ShardedDataset by id, fast on object storage.

The ids an epoch order wants are cut into windows (a few MB of records);
each window is planned (:func:`plan_ranges` merges neighbours of one shard),
its requests run concurrently, and up to ``readahead_bytes`` of later windows
are in flight while earlier records are handed out, always in the order asked.

Tuning (defaults suit S3-like stores at 10-50 ms per GET):

* ``concurrency`` (16): requests in flight.  Latency-bound stores want more
  (32-64); a local disk or HDFS is fine with 4-8.
* ``readahead_bytes`` (128 MB): memory spent on data not yet consumed; at
  least ``concurrency * typical request size`` keeps every slot busy.
* ``window_bytes`` (readahead / 4): how far ahead the planner looks for
  neighbours to merge.  Larger windows merge more for ``block``/``shard``
  orders; a ``global`` order on a big dataset has few neighbours to find.
* ``max_gap`` (256 KB): merge two records when the bytes between them are
  fewer; roughly bandwidth x latency of one GET (100 MB/s x 2.5 ms).
* ``max_waste`` (None: unbounded): cap the merged gaps' bytes at this fraction of
  the records' bytes (per window and shard, smallest gaps first).  ``0.02`` keeps a
  ``global`` order without a cache within 2% of the bytes it needs (unbounded, it
  merges across the other workers' records: ~1.7x on a small dataset), for about one
  GET per record there; ``block``/``shard`` orders merge only touching records and
  need no cap.  ``float('inf')`` is unbounded too.
* ``uncached_max_waste`` (None): the cap used when ``max_waste`` is not given and no
  cache holds the shards; the object-store and HDFS defaults
  (:data:`cloudrec.options.FETCH_DEFAULTS`) set 0.02, so no byte is read twice
  unless asked for.
* ``max_request`` (16 MB): cap one request; smaller caps spread a big read
  over more concurrent GETs.
* ``cache``: ``'none'`` reads ranges remotely; ``'shards'`` downloads whole
  shards into the node's :class:`ShardCache` first (best for ``global`` order
  over many epochs); ``'auto'`` caches remote datasets that fit the cache cap.
  A shard the cache cannot take (read-only folder, cap full of shards in use)
  is read remotely instead, with one warning.

Remote reads are pinned to the version (ETag) each shard had at open, so a
shard replaced mid-epoch is an ``ObjectChangedError`` naming it.  A dataset
table with record CRCs (``cloudrec index --table --crc``) has every record
checked wherever its bytes came from (:mod:`cloudrec.reader.record_check`).
``stats`` counts requests, bytes requested and retries.
"""
from __future__ import annotations

import os
import struct
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from cloudrec.errors import ChecksumMismatchError, ConfigError, RecordIOError
from cloudrec.format.framing import MAGIC, read_record_at
from cloudrec.reader.fetch_windows import FetchWindows
from cloudrec.reader.planner import DEFAULT_MAX_GAP, DEFAULT_MAX_REQUEST, plan_ranges
from cloudrec.reader.record_check import RecordCheck
from cloudrec.reader.streamed import StreamedRange, submit_streamed
from cloudrec.storage.ranged import RangeReader, make_range_reader
from cloudrec.storage.retry import RetryPolicy
from cloudrec.storage.redact import redact_url
from cloudrec.reader.cached import FORK_STASH as _FORK_STASH
from cloudrec.reader.cached import CacheHook as _CacheHook
from cloudrec.reader.cached import is_local as _is_local  # noqa: F401 - used by dataset.table_file
from cloudrec.reader.cached import result as _result

DEFAULT_CONCURRENCY = 16
DEFAULT_READAHEAD = 128 << 20


class _Window:
    """A run of consecutive requested ids, its plan and the request futures."""

    __slots__ = ("ids", "plan", "futures", "nbytes")

    def __init__(self, ids: np.ndarray, plan: Any, futures: List[Any]) -> None:
        # futures: Future[bytes] per request, or a StreamedRange (S3)
        self.ids, self.plan, self.futures = ids, plan, futures
        self.nbytes = plan.nbytes


class RecordFetcher(FetchWindows):
    """Yield ``(record_id, payload)`` for requested ids, in the requested order.

    ``payload`` is the record with RecordIO framing removed (IRHeader + image
    for image datasets).  See the module docstring for tuning.
    """

    def __init__(self, ds: Any, cache: str = "none", *, max_gap: int = DEFAULT_MAX_GAP,
                 max_request: int = DEFAULT_MAX_REQUEST, concurrency: int = DEFAULT_CONCURRENCY,
                 readahead_bytes: int = DEFAULT_READAHEAD, window_bytes: Optional[int] = None,
                 retry: Optional[RetryPolicy] = None, cache_dir: Optional[str] = None,
                 cache_max_bytes: Optional[int] = None, strict: bool = True,
                 partial_index: bool = False, max_waste: Optional[float] = None,
                 uncached_max_waste: Optional[float] = None) -> None:
        if cache not in ("none", "shards", "auto"):
            raise ConfigError(f"cache must be 'none', 'shards' or 'auto', got {cache!r}")
        self.ds = ds
        self.table = ds.table
        self.max_gap = int(max_gap)
        self.max_request = int(max_request)
        for name, value in (("max_waste", max_waste), ("uncached_max_waste", uncached_max_waste)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not value >= 0):
                raise ConfigError(f"{name} must be a fraction >= 0 or None, got {value!r}")
        self.max_waste = None if max_waste is None else float(max_waste)
        self.concurrency = int(concurrency)
        self.readahead_bytes = int(readahead_bytes)
        self.window_bytes = int(window_bytes or max(1 << 20, self.readahead_bytes // 4))
        # a private copy: its retry counters are this fetcher's own
        self.retry = retry.copy() if retry is not None else RetryPolicy()
        self.strict = strict
        # MXNet's ImageIter reads each listed record alone (read_idx), so an .idx listing only
        # some records is valid for it; every other reader refuses unlisted records
        self.partial_index = bool(partial_index)
        self.requests = 0          # ranged requests submitted (remote or to the cache)
        self.bytes_requested = 0   # bytes those requests cover
        self._check = RecordCheck(self) if getattr(self.table, "crc", None) is not None else None
        self._readers: Dict[int, RangeReader] = {}
        self._targets: Dict[int, Tuple[RangeReader, str, Optional[str]]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.cache_mode = cache
        self._cache = None
        if cache != "none":
            self._cache = _CacheHook.make(self, cache, cache_dir, cache_max_bytes)
        if self.max_waste is None and self._cache is None and uncached_max_waste is not None:
            # remote ranges without a cache: merged gaps are bytes someone reads again
            self.max_waste = float(uncached_max_waste)
        if self.max_waste is not None and self.max_waste == float("inf"):
            self.max_waste = None

    # -- where a shard's bytes come from --------------------------------------------------
    def _check_pid(self) -> None:
        # thread pools and event loops do not survive fork: start afresh in a child
        if self._pid != os.getpid():
            self._pid = os.getpid()
            # never destroy the parent's clients here: hdfs-native's destructors wait on
            # runtime threads that did not survive the fork
            _FORK_STASH.append((self._readers, self._targets, self._cache))
            self._readers, self._targets = {}, {}
            self._lock = threading.Lock()
            if self._cache is not None:
                self._cache.after_fork()

    def _reader_for(self, fs: Any) -> RangeReader:
        r = self._readers.get(id(fs))
        if r is None:
            r = self._readers[id(fs)] = make_range_reader(
                fs, concurrency=self.concurrency, retry=self.retry)
        return r

    def _target(self, shard_no: int) -> Optional[Tuple[RangeReader, str, Optional[str]]]:
        """(reader, path, version to pin) serving a shard now; None while its cache
        download is pending."""
        t = self._targets.get(shard_no)
        if t is None:
            with self._lock:
                t = self._targets.get(shard_no)
                if t is None:
                    if self._cache is not None:
                        t = self._cache.target(shard_no)
                        if t is None:
                            return None
                    else:
                        fs, path = self.ds.filesystem(shard_no)
                        t = (self._reader_for(fs), path, self.ds.shards[shard_no].version)
                    self._targets[shard_no] = t
        return t

    def _submit(self, shard_no: int, start: int, end: int) -> Future:
        shard = self.ds.shards[shard_no]
        self.requests += 1
        self.bytes_requested += end - start
        t = self._target(shard_no)
        if t is None:
            return self._cache.submit(shard_no, start, end)  # type: ignore[union-attr]
        # S3: a StreamedRange, whose records are readable as their bytes arrive
        return submit_streamed(t[0], t[1], start, end, shard.rec_url, t[2])

    @property
    def stats(self) -> Dict[str, int]:
        """Counters since this fetcher was made (per process): ``requests`` and
        ``bytes`` planned, ``retries`` of failed attempts, ``failures`` (reads that
        gave up), and for a cache ``cache_downloads``, ``cache_hits``,
        ``cache_corrupt`` (damaged entries dropped), ``cache_bypassed`` (shards
        read directly because the cache could not take them) and ``cache_streamed``
        (requests answered while their shard was still downloading)."""
        out = {"requests": self.requests, "bytes": self.bytes_requested,
               "retries": self.retry.retries, "failures": self.retry.failures}
        if self._check is not None:
            out["records_reread"] = self._check.reread
        if self._cache is not None:
            c = self._cache.cache
            out.update(cache_downloads=c.downloads, cache_hits=c.hits, cache_corrupt=c.corrupt,
                       cache_bypassed=len(self._cache.bypassed),
                       cache_streamed=self._cache.streamed)
        return out

    def __repr__(self) -> str:
        first = redact_url(self.ds.shards[0].rec_url) if self.ds.shards else "-"
        return (f"RecordFetcher({len(self.ds.shards)} shard(s) from {first}, cache={self.cache_mode!r}, "
                f"concurrency={self.concurrency}, max_gap={self.max_gap}, "
                f"max_waste={self.max_waste})")

    def _start_window(self, ids: np.ndarray, max_gap: int) -> _Window:
        t = self.table
        plan = plan_ranges(t.shard[ids], t.offset[ids], t.length[ids], max_gap, self.max_request,
                           self.max_waste)
        # submit requests in the order their first record is wanted
        first_need = np.full(len(plan), ids.shape[0], np.int64)
        np.minimum.at(first_need, plan.record_request, np.arange(ids.shape[0]))
        futures: List[Optional[Future]] = [None] * len(plan)
        for r in np.argsort(first_need, kind="stable").tolist():
            futures[r] = self._submit(int(plan.shard[r]), int(plan.start[r]), int(plan.end[r]))
        return _Window(ids, plan, futures)  # type: ignore[arg-type]

    # -- public ----------------------------------------------------------------------------
    def fetch(self, record_ids: Iterable[int], *, chunk_starts: Optional[np.ndarray] = None,
              touching_only: bool = False) -> Iterator[Tuple[int, bytes]]:
        """Yield ``(record_id, payload)`` for every id given, in that order.

        Hints from an :class:`~cloudrec.reader.partition.EpochSlice` of a
        ``block`` or ``shard`` order keep every byte read once (pass
        ``chunk_starts=sl.chunk_starts, touching_only=sl.exclusive is not None``
        with ``sl.ids``): look-ahead windows are cut where the order's shuffle
        windows begin, so a block's records this reader wants share one window,
        and the bytes between two of them can only be records of other windows
        or other workers; so records are merged only where they touch (one
        request per run of a block) instead of across gaps of ``max_gap``.
        """
        self._check_pid()
        if self._cache is not None:
            self._cache.touch()
        if self._check is not None:
            self._check.settle()
        max_gap = 0 if touching_only else self.max_gap
        windows = self._windows(record_ids, chunk_starts)
        queue: "deque[_Window]" = deque()
        inflight = 0
        exhausted = False
        try:
            while True:
                while not exhausted and (not queue or inflight < self.readahead_bytes):
                    ids = next(windows, None)
                    if ids is None:
                        exhausted = True
                        break
                    w = self._start_window(ids, max_gap)
                    queue.append(w)
                    inflight += w.nbytes
                if not queue:
                    if self._cache is not None:  # streamed shards: let their downloads publish
                        self._cache.wait_downloads()
                    if self._check is not None:  # and drop those that served bad bytes
                        self._check.settle()
                    return
                w = queue[0]
                if self._cache is not None:   # streamed bytes that failed their checksum
                    self._cache.check()
                yield from self._emit(w)
                queue.popleft()
                inflight -= w.nbytes
        except ChecksumMismatchError:
            if self._cache is not None:   # reported: the next fetch starts clean
                self._cache.corrupt = None
            raise
        finally:  # stopped early or failed: drop what is still queued
            for w in queue:
                for f in w.futures:
                    f.cancel()

    def _emit(self, w: _Window) -> Iterator[Tuple[int, bytes]]:
        t = self.table
        plan = w.plan
        bufs: Dict[int, memoryview] = {}
        for k, rid in enumerate(w.ids.tolist()):
            r = int(plan.record_request[k])
            pos = int(plan.record_pos[k])
            length = int(t.length[rid])
            buf = bufs.get(r)
            if buf is None:
                req_url = self.ds.shards[int(plan.shard[r])].rec_url
                fut = w.futures[r]
                if isinstance(fut, StreamedRange):   # wait for this record's bytes only
                    buf = fut.view(pos + length, req_url, int(plan.start[r]), int(plan.end[r]))
                else:
                    buf = bufs[r] = memoryview(_result(fut, req_url, int(plan.start[r]),
                                                       int(plan.end[r])))
            base = int(plan.start[r]) + pos
            shard_no = int(plan.shard[r])
            rec = buf[pos:pos + length]
            if self._check is not None:   # the table's CRC of the record's bytes
                rec = self._check.verified(rid, shard_no, base, rec)
            try:
                payload, nxt = read_record_at(rec, 0, base_offset=base,
                                              url=self.ds.shards[shard_no].rec_url,
                                              strict=self.strict)
                if nxt < length and not (self.partial_index and _record_head_at(rec, nxt)):
                    # an .idx skipped a record here (or bytes follow that are no record)
                    raise RecordIOError(f"the record ends at {base + nxt} but the index's next "
                                        f"record starts at {base + length}: the .idx does not "
                                        "list every record, or bytes that are not a record "
                                        "follow it (rebuild it: cloudrec index)", offset=base)
            except RecordIOError as exc:
                raise RecordIOError(f"{exc.args[0].rsplit(' (', 1)[0]} (record id {rid})",
                                    self.ds.shards[shard_no].rec_url,
                                    exc.offset if exc.offset is not None else base,
                                    key=_key(t.key[rid])) from None
            yield rid, payload

    def get(self, record_id: int) -> bytes:
        """One record's payload."""
        for _, payload in self.fetch([int(record_id)]):
            return payload
        raise IndexError(record_id)

    def close(self) -> None:
        """Release thread pools, descriptors and cache handles."""
        if self._check is not None:   # before the readers its downloads use are closed
            self._check.settle(wait=True)
        for r in self._readers.values():
            r.close()
        self._readers.clear()
        self._targets.clear()
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> "RecordFetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_readers"], state["_targets"] = {}, {}
        state["_lock"] = None
        state["_pid"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _key(k: Any) -> Any:
    return k.item() if hasattr(k, "item") else k


def _record_head_at(buf, pos: int) -> bool:
    """Do the bytes at ``pos`` start a record (magic, then cflag 0 or 1)?  With
    ``partial_index`` an unlisted record may follow a listed one; garbage may not."""
    if len(buf) - pos < 8:
        return False
    magic, lrec = struct.unpack_from("<II", buf, pos)
    return magic == MAGIC and (lrec >> 29) in (0, 1)
