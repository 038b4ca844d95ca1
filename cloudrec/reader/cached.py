"""The fetcher's side of the node's shard cache: download once, stream while downloading.

:class:`CacheHook` serves a :class:`~cloudrec.reader.fetch.RecordFetcher`'s
requests from a :class:`~cloudrec.storage.cache.ShardCache`:

* a shard's first request starts its download (a small pool, one download per
  node thanks to the cache's file lock); the download fetches the shard in
  streamed GETs of up to 64 MB (:mod:`cloudrec.storage.cache_download`), the
  ranges waiting requests need first and the rest in file order, and every
  request whose bytes are on disk already is answered from the partial file
  at once (streaming), so a record never waits for bytes before it; another process of the node that needs the shard
  meanwhile follows the download's ``<key>.part`` progress file, streams from
  the same temp file (no second download) and posts the offsets it waits for
  to ``<key>.want`` (:mod:`cloudrec.reader.cache_stream`);
* once published, the entry is read with ``pread`` through a descriptor that
  holds a shared lock, so eviction leaves it alone while this fetcher lives;
* a shard the cache cannot take (read-only folder, cap full of shards in use)
  is read remotely, pinned to its version, with one warning per reason.
"""
from __future__ import annotations

import threading
import warnings
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cloudrec.errors import ChecksumMismatchError, CloudrecError, StorageError
from cloudrec.reader.cache_stream import _follow, _Progress, _settle_value
from cloudrec.reader.daemon_pool import DaemonPool
from cloudrec.reader.streamed import StreamedRange
from cloudrec.storage.ranged import RangeReader, make_range_reader

FORK_STASH: List[Any] = []  # parent-process readers kept alive in a forked child
Target = Tuple[RangeReader, str, Optional[str]]  # (reader, path, version to pin)


class CacheHook:
    """Serves a fetcher's shards from a ShardCache (see the module docstring)."""

    DOWNLOADERS = 16
    stream = True  # False: a request waits for its whole shard (the behaviour before streaming)

    def __init__(self, fetcher: Any, cache: Any) -> None:
        self.f = fetcher
        self.cache = cache
        self._paths: Dict[int, Future] = {}
        self._progress: Dict[int, _Progress] = {}
        self._local: Optional[RangeReader] = None
        self._pool: Optional[DaemonPool] = None
        self._lock = threading.Lock()
        self.bypassed: Dict[int, str] = {}  # shard -> why the cache could not take it
        self.streamed = 0  # requests answered while their shard was still downloading
        # a download that failed its checksum after records were streamed from it
        self.corrupt: Optional[ChecksumMismatchError] = None
        self._closed = False

    @classmethod
    def make(cls, fetcher: Any, mode: str, cache_dir: Optional[str],
             max_bytes: Optional[int]) -> Optional["CacheHook"]:
        from cloudrec.storage.cache import ShardCache
        cache = ShardCache(cache_dir, max_bytes)
        if mode == "auto":
            remote = [s for i, s in enumerate(fetcher.ds.shards)
                      if not is_local(fetcher.ds.filesystem(i)[0])]
            if not remote or sum(s.size for s in remote) > cache.max_bytes:
                return None
        return cls(fetcher, cache)

    def __getstate__(self) -> Dict[str, Any]:
        # pools, locks and descriptors stay behind; the copy downloads or finds shards anew
        state = dict(self.__dict__)
        state["_paths"], state["_local"], state["_pool"], state["_lock"] = {}, None, None, None
        state["bypassed"], state["_progress"] = {}, {}
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._closed = False

    def after_fork(self) -> None:
        # the child shares the parent's descriptors (and so its shared locks); fresh ones here
        FORK_STASH.append((self._paths, self._local, self._pool, self._progress))
        self._paths, self._local, self._pool, self._progress = {}, None, None, {}
        self._lock = threading.Lock()

    def touch(self) -> None:
        """Mark the shards this fetcher holds as used (LRU), once per fetch()."""
        for fut in list(self._paths.values()):
            if fut.done() and fut.exception() is None:
                reader, path, _ = fut.result()
                if reader is self._local:
                    self.cache.mark_used(path)

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
            if self._closed:  # a download finishing after close(): published, held by no one
                return
            hold_shared(self.local_reader()._fd(path))  # type: ignore[attr-defined]
        return hold

    def target(self, shard_no: int) -> Optional[Target]:
        """(reader, path, version) once the shard is local (or bypasses the cache), else None."""
        fs, path = self.f.ds.filesystem(shard_no)
        if is_local(fs):  # read in place
            return self.f._reader_for(fs), path, None
        fut = self._paths.get(shard_no)
        if fut is not None and fut.done() and fut.exception() is None:
            return fut.result()
        return None

    def _ensure(self, shard_no: int,
                want: Optional[Tuple[int, int, Future, StreamedRange]] = None
                ) -> Tuple[Future, Optional[_Progress]]:
        """The shard's download (started if need be); ``want`` waits on its progress, and a
        new download hears it before its first GET."""
        with self._lock:
            fut = self._paths.get(shard_no)
            if fut is None or (fut.done() and fut.exception() is not None):
                if self._pool is None:  # daemon threads: a download never holds up exit
                    self._pool = DaemonPool(self.DOWNLOADERS, thread_name_prefix="cloudrec-cache")
                prog = self._progress[shard_no] = _Progress()
                if want is not None and self.stream:
                    prog.wait_for(*want)
                    want = None
                fut = self._paths[shard_no] = self._pool.submit(self._download, shard_no, prog)
                fut.add_done_callback(lambda _f, p=prog: p.close())
            prog_now = self._progress.get(shard_no)
        if want is not None and self.stream and prog_now is not None and not fut.done():
            prog_now.wait_for(*want)
        return fut, prog_now

    def _download(self, shard_no: int, prog: _Progress) -> Target:
        from cloudrec.storage.cache import CacheUnavailable
        from cloudrec.storage.cache_download import (DOWNLOAD_CHUNK, PIECE, WHOLE_CHUNK,
                                                     download_ranges)
        from cloudrec.storage.cache_progress import ProgressFile
        from cloudrec.storage.stream_read import can_stream, stream_range
        shard = self.f.ds.shards[shard_no]
        fs, path = self.f.ds.filesystem(shard_no)
        reader = self.f._reader_for(fs)
        # pinned to the version seen at open: a replaced object is refused, never cached
        # under the old version's name
        part: List[Any] = []  # this download's progress file, for the node's other processes

        def advance(start: int, end: int) -> None:
            prog.advance(start, end)
            if part:
                part[-1].advance(start, end)

        def wants() -> List[Tuple[int, int]]:   # ours, then those of the node's other processes
            return prog.take_wants() + (part[-1].wants() if part else [])

        def stream(a: int, b: int, sink: Any, on_checksum: Any = None) -> Future:
            # S3's stored checksum of the whole shard is asked for and checked: the entry
            # is trusted by every process of the node from then on
            return stream_range(reader, path, a, b, sink, shard.rec_url, shard.version,
                                direct=False, checksum=on_checksum)

        chunk = DOWNLOAD_CHUNK if can_stream(reader) else WHOLE_CHUNK
        fetch_all = download_ranges(None, shard.size, chunk=chunk,
                                    on_chunk=advance if self.stream else None, first=chunk,
                                    wants=wants if self.stream else None, stream=stream,
                                    checked=can_stream(reader), url=shard.rec_url)

        def download(tmp: str, have: Sequence[Tuple[int, int]] = ()) -> Optional[int]:
            prog.opened(tmp)
            if self.stream:
                part.append(ProgressFile(tmp, shard.size, PIECE))
            # the file's CRC, from the streamed bytes; ``have``: a dead download's pieces
            return fetch_all(tmp, have)

        try:
            local = self._get_checked(shard, download, prog)
        except CacheUnavailable as exc:
            self.bypassed[shard_no] = str(exc)
            _warn_once(self.cache.dir, type(exc).__name__,
                       f"cloudrec cache: {exc}; reading such shards directly instead")
            return reader, path, shard.version
        finally:
            for pf in part:
                pf.close()
            self.streamed += prog.served
        return self.local_reader(), local, None

    def _get_checked(self, shard: Any, download: Any, prog: _Progress) -> str:
        """``cache.get`` of the shard; bytes that failed the store's checksum are fetched
        again once, unless records were streamed from them (then the fetch must fail)."""
        for attempt in (0, 1):
            served = prog.served
            try:
                return self.cache.get(shard.rec_url, shard.size, shard.version, download,
                                      hold=self._holder(shard.rec_url),
                                      follow=(lambda p: _follow(p, prog)) if self.stream else None,
                                      resumable=True)
            except ChecksumMismatchError as exc:
                if prog.served > served:
                    with self._lock:
                        why = str(exc).rsplit(" (", 1)[0]   # the location is said once
                        self.corrupt = self.corrupt or ChecksumMismatchError(
                            f"{why}; records of this shard streamed from those bytes may be "
                            "wrong", shard.rec_url)
                    raise self.corrupt from None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Raise the checksum failure of a download records were streamed from, if any."""
        if self.corrupt is not None:
            raise self.corrupt

    def submit(self, shard_no: int, start: int, end: int) -> Any:
        """``[start, end)``: a StreamedRange filled from the partial download as its bytes
        are written (the rest, if any, from the finished entry, or from the remote shard
        when it bypasses); without streaming a Future of the bytes."""
        out: Future = Future()
        url = self.f.ds.shards[shard_no].rec_url

        def settle(f: Future, then: Any = None) -> None:
            # always resolve ``out``: an exception in a done-callback is only logged,
            # so a cancelled download (close()) would leave the reader waiting forever
            if out.done():
                return
            try:
                value = result(f, url, start, end)
                if then is None:
                    _settle_value(out, value)
                else:
                    then(value)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                if not out.done():
                    try:
                        out.set_exception(exc)
                    except InvalidStateError:
                        pass

        def read_target(t: Target) -> None:
            if not out.done():
                t[0].submit(t[1], start, end, url, version=t[2]).add_done_callback(settle)

        def chain(pf: Future) -> None:
            settle(pf, read_target)

        if not self.stream:
            fut, _ = self._ensure(shard_no)
            fut.add_done_callback(chain)
            return out
        # streamed: each record is readable once its own bytes are written, not when the
        # request's last byte is (a request may span up to max_request bytes)
        sr = StreamedRange(start, end, buffer=False)
        sr.future = ended = Future()
        ended.add_done_callback(sr._ended)

        def finish(o: Future) -> None:
            try:
                data = o.result()
                if data is not None and sr.got < end - start:   # read from the entry whole
                    sr.fill(data)
                ended.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                try:
                    ended.set_exception(exc)
                except InvalidStateError:
                    pass

        out.add_done_callback(finish)
        fut, _ = self._ensure(shard_no, (start, end, out, sr))
        fut.add_done_callback(chain)
        return sr

    def wait_downloads(self) -> None:
        """Wait for downloads still finishing (their records may all have been streamed
        already); their errors were or will be reported by the reads that need them."""
        for fut in list(self._paths.values()):
            try:
                fut.result()
            except BaseException:  # noqa: BLE001 - not this caller's to report
                pass
        self.check()   # except bytes already handed over that proved wrong

    def forget(self, shard_no: int, entry: str) -> None:
        """The entry of ``shard_no`` was discarded: its next request downloads it again."""
        with self._lock:
            self._paths.pop(shard_no, None)
            self._progress.pop(shard_no, None)
        if self._local is not None:
            self._local.retire(entry)   # type: ignore[attr-defined]

    def close(self) -> None:
        # a download whose bytes are all on disk is only publishing (CRC, rename): let it
        # finish, so records already streamed from it leave a cache entry behind
        for shard_no, fut in list(self._paths.items()):
            prog = self._progress.get(shard_no)
            if prog is not None and not fut.done() and \
                    prog.written(self.f.ds.shards[shard_no].size):
                try:
                    fut.result(timeout=60)
                except BaseException:  # noqa: BLE001 - closing; reads report their own errors
                    pass
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


def is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem
    return isinstance(fs, (LocalFileSystem, MemoryFileSystem))


def result(f: Future, url: str, start: int, end: int) -> Any:
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
