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
* ``max_request`` (16 MB): cap one request; smaller caps spread a big read
  over more concurrent GETs.
* ``cache``: ``'none'`` reads ranges remotely; ``'shards'`` downloads whole
  shards into the node's :class:`ShardCache` first (best for ``global`` order
  over many epochs); ``'auto'`` caches remote datasets that fit the cache cap.
  A shard the cache cannot take (read-only folder, cap full of shards in use)
  is read remotely instead, with one warning.

Remote reads are pinned to the version (ETag) each shard had at open, so a
shard replaced mid-epoch is an ``ObjectChangedError`` naming it.
``stats`` counts requests, bytes requested and retries.
"""
from __future__ import annotations

import os
import struct
import threading
import warnings
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from itertools import islice
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from cloudrec.errors import CloudrecError, ConfigError, RecordIOError, StorageError
from cloudrec.format.framing import MAGIC, read_record_at
from cloudrec.reader.planner import DEFAULT_MAX_GAP, DEFAULT_MAX_REQUEST, plan_ranges
from cloudrec.storage.ranged import RangeReader, make_range_reader
from cloudrec.storage.retry import RetryPolicy
from cloudrec.storage.redact import redact_url

DEFAULT_CONCURRENCY = 16
_FORK_STASH: List[Any] = []  # parent-process readers kept alive in a forked child
DEFAULT_READAHEAD = 128 << 20
_ID_BLOCK = 4096


class _Window:
    """A run of consecutive requested ids, its plan and the request futures."""

    __slots__ = ("ids", "plan", "futures", "nbytes")

    def __init__(self, ids: np.ndarray, plan: Any, futures: List[Future]) -> None:
        self.ids, self.plan, self.futures = ids, plan, futures
        self.nbytes = plan.nbytes


class RecordFetcher:
    """Yield ``(record_id, payload)`` for requested ids, in the requested order.

    ``payload`` is the record with RecordIO framing removed (IRHeader + image
    for image datasets).  See the module docstring for tuning.
    """

    def __init__(self, ds: Any, cache: str = "none", *, max_gap: int = DEFAULT_MAX_GAP,
                 max_request: int = DEFAULT_MAX_REQUEST, concurrency: int = DEFAULT_CONCURRENCY,
                 readahead_bytes: int = DEFAULT_READAHEAD, window_bytes: Optional[int] = None,
                 retry: Optional[RetryPolicy] = None, cache_dir: Optional[str] = None,
                 cache_max_bytes: Optional[int] = None, strict: bool = True,
                 partial_index: bool = False) -> None:
        if cache not in ("none", "shards", "auto"):
            raise ConfigError(f"cache must be 'none', 'shards' or 'auto', got {cache!r}")
        self.ds = ds
        self.table = ds.table
        self.max_gap = int(max_gap)
        self.max_request = int(max_request)
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
        self._readers: Dict[int, RangeReader] = {}
        self._targets: Dict[int, Tuple[RangeReader, str, Optional[str]]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.cache_mode = cache
        self._cache = None
        if cache != "none":
            self._cache = _CacheHook.make(self, cache, cache_dir, cache_max_bytes)

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
        return t[0].submit(t[1], start, end, shard.rec_url, version=t[2])

    @property
    def stats(self) -> Dict[str, int]:
        """Counters since this fetcher was made (per process): ``requests`` and
        ``bytes`` planned, ``retries`` of failed attempts, ``failures`` (reads that
        gave up), and for a cache ``cache_downloads``, ``cache_hits``,
        ``cache_corrupt`` (damaged entries dropped) and ``cache_bypassed`` (shards
        read directly because the cache could not take them)."""
        out = {"requests": self.requests, "bytes": self.bytes_requested,
               "retries": self.retry.retries, "failures": self.retry.failures}
        if self._cache is not None:
            c = self._cache.cache
            out.update(cache_downloads=c.downloads, cache_hits=c.hits, cache_corrupt=c.corrupt,
                       cache_bypassed=len(self._cache.bypassed))
        return out

    def __repr__(self) -> str:
        first = redact_url(self.ds.shards[0].rec_url) if self.ds.shards else "-"
        return (f"RecordFetcher({len(self.ds.shards)} shard(s) from {first}, cache={self.cache_mode!r}, "
                f"concurrency={self.concurrency}, max_gap={self.max_gap})")

    # -- windows ---------------------------------------------------------------------------
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

    def _windows(self, record_ids: Iterable[int]) -> Iterator[np.ndarray]:
        """Cut the id stream into runs of about ``window_bytes`` of records."""
        n = len(self.table)
        lengths = self.table.length
        carry = np.zeros(0, np.int64)
        for block in self._id_blocks(record_ids):
            bad = (block < 0) | (block >= n)
            if bad.any():
                raise IndexError(f"record id {int(block[np.flatnonzero(bad)[0]])} out of range "
                                 f"[0, {n})")
            ids = np.concatenate([carry, block]) if carry.size else block
            csum = np.cumsum(lengths[ids])
            cuts = np.searchsorted(csum, np.arange(1, int(csum[-1] // self.window_bytes) + 1)
                                   * self.window_bytes, side="right")
            prev = 0
            for c in cuts.tolist():
                c = max(c, prev + 1)
                if c > ids.shape[0]:
                    break
                yield ids[prev:c]
                prev = c
            carry = ids[prev:]
        if carry.size:
            yield carry

    def _start_window(self, ids: np.ndarray) -> _Window:
        t = self.table
        plan = plan_ranges(t.shard[ids], t.offset[ids], t.length[ids],
                           self.max_gap, self.max_request)
        # submit requests in the order their first record is wanted
        first_need = np.full(len(plan), ids.shape[0], np.int64)
        np.minimum.at(first_need, plan.record_request, np.arange(ids.shape[0]))
        futures: List[Optional[Future]] = [None] * len(plan)
        for r in np.argsort(first_need, kind="stable").tolist():
            futures[r] = self._submit(int(plan.shard[r]), int(plan.start[r]), int(plan.end[r]))
        return _Window(ids, plan, futures)  # type: ignore[arg-type]

    # -- public ----------------------------------------------------------------------------
    def fetch(self, record_ids: Iterable[int]) -> Iterator[Tuple[int, bytes]]:
        """Yield ``(record_id, payload)`` for every id given, in that order."""
        self._check_pid()
        if self._cache is not None:
            self._cache.touch()
        windows = self._windows(record_ids)
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
                    w = self._start_window(ids)
                    queue.append(w)
                    inflight += w.nbytes
                if not queue:
                    return
                w = queue[0]
                yield from self._emit(w)
                queue.popleft()
                inflight -= w.nbytes
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
            buf = bufs.get(r)
            if buf is None:
                req_url = self.ds.shards[int(plan.shard[r])].rec_url
                buf = bufs[r] = memoryview(_result(w.futures[r], req_url, int(plan.start[r]),
                                                   int(plan.end[r])))
            pos = int(plan.record_pos[k])
            length = int(t.length[rid])
            base = int(plan.start[r]) + pos
            shard_no = int(plan.shard[r])
            try:
                payload, nxt = read_record_at(buf[pos:pos + length], 0, base_offset=base,
                                              url=self.ds.shards[shard_no].rec_url,
                                              strict=self.strict)
                if nxt < length and not (self.partial_index and _record_head_at(buf, pos + nxt)):
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


class _CacheHook:
    """Serves shards from a :class:`ShardCache`: download once, then ``pread`` locally.

    A shard's first request waits for its download (started in a small pool);
    later ones go straight to the local file, held with a shared lock so that
    eviction leaves it alone while this fetcher lives.  Local files are read in
    place.  A shard the cache cannot take is read remotely (one warning).
    """

    DOWNLOADERS = 4

    def __init__(self, fetcher: "RecordFetcher", cache: Any) -> None:
        self.f = fetcher
        self.cache = cache
        self._paths: Dict[int, Future] = {}
        self._local: Optional[RangeReader] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self.bypassed: Dict[int, str] = {}  # shard -> why the cache could not take it
        self._closed = False

    @classmethod
    def make(cls, fetcher: "RecordFetcher", mode: str, cache_dir: Optional[str],
             max_bytes: Optional[int]) -> Optional["_CacheHook"]:
        from cloudrec.storage.cache import ShardCache
        cache = ShardCache(cache_dir, max_bytes)
        if mode == "auto":
            remote = [s for i, s in enumerate(fetcher.ds.shards)
                      if not _is_local(fetcher.ds.filesystem(i)[0])]
            if not remote or sum(s.size for s in remote) > cache.max_bytes:
                return None
        return cls(fetcher, cache)

    def __getstate__(self) -> Dict[str, Any]:
        # pools, locks and descriptors stay behind; the copy downloads or finds shards anew
        state = dict(self.__dict__)
        state["_paths"], state["_local"], state["_pool"], state["_lock"] = {}, None, None, None
        state["bypassed"] = {}
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._closed = False

    def after_fork(self) -> None:
        # the child shares the parent's descriptors (and so its shared locks); fresh ones here
        _FORK_STASH.append((self._paths, self._local, self._pool))
        self._paths, self._local, self._pool = {}, None, None
        self._lock = threading.Lock()

    def touch(self) -> None:
        """Mark the shards this fetcher holds as used (LRU), once per fetch()."""
        for fut in list(self._paths.values()):
            if fut.done() and fut.exception() is None:
                reader, path, _ = fut.result()
                if reader is self._local:
                    try:
                        os.utime(path)
                    except OSError:
                        pass  # read-only folder or removed by `cache clear`: our descriptor reads

    def local_reader(self) -> RangeReader:
        if self._local is None:
            from fsspec.implementations.local import LocalFileSystem
            self._local = make_range_reader(LocalFileSystem(), concurrency=self.f.concurrency,
                                            retry=self.f.retry)
        return self._local

    def _holder(self, url: str) -> Any:
        """``hold(path)`` for the cache: open the entry (before any eviction can run) and
        mark it in use."""
        from cloudrec.storage.cache_files import hold_shared

        def hold(path: str) -> None:
            if self._closed:  # a download finishing after close(): hold nothing
                raise StorageError("read cancelled: the fetcher was closed while downloading",
                                   url)
            hold_shared(self.local_reader()._fd(path))  # type: ignore[attr-defined]
        return hold

    def target(self, shard_no: int) -> Optional[Tuple[RangeReader, str, Optional[str]]]:
        """(reader, path, version) once the shard is local (or bypasses the cache), else None."""
        fs, path = self.f.ds.filesystem(shard_no)
        if _is_local(fs):  # read in place
            return self.f._reader_for(fs), path, None
        fut = self._paths.get(shard_no)
        if fut is not None and fut.done() and fut.exception() is None:
            return fut.result()
        return None

    def _ensure(self, shard_no: int) -> Future:
        with self._lock:
            fut = self._paths.get(shard_no)
            if fut is None or (fut.done() and fut.exception() is not None):
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.DOWNLOADERS,
                                                    thread_name_prefix="cloudrec-cache")
                fut = self._paths[shard_no] = self._pool.submit(self._download, shard_no)
            return fut

    def _download(self, shard_no: int) -> Tuple[RangeReader, str, Optional[str]]:
        from cloudrec.storage.cache import CacheUnavailable, download_ranges
        shard = self.f.ds.shards[shard_no]
        fs, path = self.f.ds.filesystem(shard_no)
        reader = self.f._reader_for(fs)
        # pinned to the version seen at open: a replaced object is refused, never cached
        # under the old version's name
        dl = download_ranges(lambda a, b: reader.submit(path, a, b, shard.rec_url,
                                                        version=shard.version), shard.size)
        try:
            local = self.cache.get(shard.rec_url, shard.size, shard.version, dl,
                                   hold=self._holder(shard.rec_url))
        except CacheUnavailable as exc:
            self.bypassed[shard_no] = str(exc)
            _warn_once(self.cache.dir, type(exc).__name__,
                       f"cloudrec cache: {exc}; reading such shards directly instead")
            return reader, path, shard.version
        return self.local_reader(), local, None

    def submit(self, shard_no: int, start: int, end: int) -> Future:
        """A Future of ``[start, end)`` read from the cached copy once it is there."""
        out: Future = Future()
        url = self.f.ds.shards[shard_no].rec_url

        def settle(f: Future, then: Any = None) -> None:
            # always resolve ``out``: an exception in a done-callback is only logged,
            # so a cancelled download (close()) would leave the reader waiting forever
            if out.done():
                return
            try:
                result = _result(f, url, start, end)
                if then is None:
                    out.set_result(result)
                else:
                    then(result)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                if not out.done():
                    out.set_exception(exc)

        def read_target(t: Tuple[RangeReader, str, Optional[str]]) -> None:
            t[0].submit(t[1], start, end, url, version=t[2]).add_done_callback(settle)

        def chain(pf: Future) -> None:
            settle(pf, read_target)

        self._ensure(shard_no).add_done_callback(chain)
        return out

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._local is not None:
            self._local.close()  # closing the descriptors drops their shared locks
            self._local = None
        self._paths = {}


_WARNED: set = set()


def _warn_once(folder: str, kind: str, message: str) -> None:
    """One warning per cache folder and reason per process (not one per shard)."""
    if (folder, kind) in _WARNED:
        return
    _WARNED.add((folder, kind))
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem
    return isinstance(fs, (LocalFileSystem, MemoryFileSystem))


def _result(f: Future, url: str, start: int, end: int) -> Any:
    """``f.result()``; cancelled or unschedulable reads (the fetcher was closed) become
    a StorageError naming the URL and range instead of a bare CancelledError/RuntimeError."""
    try:
        return f.result()
    except CancelledError:
        raise StorageError("read cancelled: the fetcher was closed while reading",
                           url, start, end) from None
    except RuntimeError as exc:
        if isinstance(exc, CloudrecError) or "shutdown" not in str(exc):
            raise
        raise StorageError(f"read not started: the fetcher was closed ({exc})",
                           url, start, end) from None


def _key(k: Any) -> Any:
    return k.item() if hasattr(k, "item") else k


def _record_head_at(buf, pos: int) -> bool:
    """Do the bytes at ``pos`` start a record (magic, then cflag 0 or 1)?  With
    ``partial_index`` an unlisted record may follow a listed one; garbage may not."""
    if len(buf) - pos < 8:
        return False
    magic, lrec = struct.unpack_from("<II", buf, pos)
    return magic == MAGIC and (lrec >> 29) in (0, 1)
