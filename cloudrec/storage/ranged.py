"""Concurrent byte-range reads of files behind any fsspec filesystem.

One seam, :class:`RangeReader.submit(path, start, end) -> Future[bytes]`, with
three implementations chosen by what the filesystem offers:

* async filesystems (s3fs, http, webhdfs via aiohttp ...): one coroutine per
  range (``_cat_file``, which is what their ``_cat_ranges`` runs; on S3 a
  presigned GET instead, :mod:`cloudrec.storage.s3_direct`) on the
  filesystem's own event loop, each cut off by the per-request timeout and
  retried by the :class:`RetryPolicy`;
* local files: ``os.pread`` on a kept-open descriptor, from a thread pool;
* everything else (hdfs-native, memory, ...): a thread pool; positional
  ``read_range`` on a kept-open handle where the file object has one, else
  ``cat_file``.

Every result is checked to be exactly ``end - start`` bytes long.  A read
given the object's ``version`` (``"ETag=<etag>"``, as the dataset layer
records at open) is pinned to it on S3 (``If-Match`` plus a check of the
answer's ETag) and HTTP (``If-Match``): a replaced object is an
:class:`ObjectChangedError` naming it, never bytes of another version.
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

import fsspec

from cloudrec.storage import s3_direct
from cloudrec.storage.retry import ObjectChangedError, ReadTimeoutError, RetryPolicy, check_length
from cloudrec.storage.fs_calls import _without_client_retries

DEFAULT_CONCURRENCY = 16


class RangeReader:
    """Reads byte ranges of files on one filesystem, concurrently, with retries.

    ``concurrency`` bounds requests in flight; ``retry`` sets attempts, backoff
    and the per-request timeout.  Sync clients may have no socket timeout
    (requests, used by webhdfs, has none by default), so each attempt runs in a
    helper thread and is abandoned after ``retry.timeout``; an abandoned call
    keeps its thread until it returns (the helper pool is bounded).
    """

    watchdog = True

    def __init__(self, fs: fsspec.AbstractFileSystem, *, concurrency: int = DEFAULT_CONCURRENCY,
                 retry: Optional[RetryPolicy] = None) -> None:
        self.fs = fs
        self.concurrency = max(1, int(concurrency))
        self.retry = retry or RetryPolicy()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._attempts: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.fs).__name__}, concurrency={self.concurrency}, "
                f"retry={self.retry!r})")

    # -- public -----------------------------------------------------------------
    def submit(self, path: str, start: int, end: int, url: Optional[str] = None,
               version: Optional[str] = None) -> "Future[bytes]":
        """Start reading ``[start, end)`` of ``path``; the Future gives exactly those bytes.

        ``version`` (``"ETag=..."``) pins the read to that object version
        where the backend can check it (S3, HTTP); elsewhere it is ignored.
        """
        url = url or path
        if end <= start:
            f: Future = Future()
            f.set_result(b"")
            return f
        return self._pool_().submit(self._read_sync, path, start, end, url)

    def read(self, path: str, start: int, end: int, url: Optional[str] = None) -> bytes:
        """Read ``[start, end)`` now (with retries)."""
        return self.submit(path, start, end, url).result()

    def read_ranges(self, path: str, ranges: Sequence[Tuple[int, int]],
                    url: Optional[str] = None) -> List[bytes]:
        """Read several ranges of one file concurrently; results in the order given."""
        futs = [self.submit(path, s, e, url) for s, e in ranges]
        return [f.result() for f in futs]

    def close(self) -> None:
        """Stop the thread pool and close kept-open handles."""
        self._closed = True
        for pool in (self._pool, self._attempts):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._attempts = None

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- implementation ---------------------------------------------------------
    def _pool_(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency,
                                                    thread_name_prefix="cloudrec-range")
        return self._pool

    def _read_once(self, path: str, start: int, end: int) -> bytes:
        return self.fs.cat_file(path, start=start, end=end)

    def _attempt_pool(self) -> ThreadPoolExecutor:
        if self._attempts is None:
            with self._lock:
                if self._attempts is None:
                    self._attempts = ThreadPoolExecutor(2 * self.concurrency + 4,
                                                        thread_name_prefix="cloudrec-attempt")
        return self._attempts

    def _read_sync(self, path: str, start: int, end: int, url: str) -> bytes:
        timeout = self.retry.timeout

        def attempt() -> bytes:
            if not self.watchdog:
                data = self._read_once(path, start, end)
            else:
                fut = self._attempt_pool().submit(self._read_once, path, start, end)
                try:
                    data = fut.result(timeout=timeout)
                except FutureTimeout:
                    fut.cancel()
                    raise ReadTimeoutError(f"no answer within {timeout} s", url, start,
                                           end) from None
            return check_length(data, url, start, end)
        return self.retry.call(attempt, url, start, end)


class LocalRangeReader(RangeReader):
    """Local files: ``os.pread`` on descriptors kept open per path."""

    watchdog = False  # a local disk does not stall like a socket

    def __init__(self, fs: fsspec.AbstractFileSystem, **kw: Any) -> None:
        super().__init__(fs, **kw)
        self._fds: Dict[str, int] = {}
        self._retired: List[int] = []   # descriptors of replaced files, closed with the reader

    def retire(self, path: str) -> None:
        """Open ``path`` anew on its next read (the file there was replaced); the old
        descriptor stays open until :meth:`close`, as reads in flight may still use it."""
        with self._lock:
            fd = self._fds.pop(path, None)
            if fd is not None:
                self._retired.append(fd)

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = os.open(path, os.O_RDONLY)
                    self._fds[path] = fd
        return fd

    def _read_once(self, path: str, start: int, end: int) -> bytes:
        return os.pread(self._fd(path), end - start, start)

    def close(self) -> None:
        super().close()
        fds, self._fds = self._fds, {}
        retired, self._retired = self._retired, []
        for fd in list(fds.values()) + retired:
            try:
                os.close(fd)
            except OSError:
                pass


class HandleRangeReader(RangeReader):
    """Filesystems whose file objects have a positional ``read_range`` (hdfs-native)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, **kw: Any) -> None:
        super().__init__(fs, **kw)
        self._local = threading.local()
        self._all: List[Any] = []  # every handle opened, to close them all

    def _read_once(self, path: str, start: int, end: int) -> bytes:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        h = handles.get(path)
        if h is None:
            h = handles[path] = self.fs.open(path, "rb")
            with self._lock:
                self._all.append(h)
        try:
            size = len(h)  # hdfs-native panics (BaseException) when asked past the end
            if start >= size:
                return b""
            return h.read_range(start, min(end, size) - start)
        except Exception:
            handles.pop(path, None)  # reopen on the next attempt
            raise

    def close(self) -> None:
        super().close()
        with self._lock:
            hs, self._all = self._all, []
        for h in hs:
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


class AsyncRangeReader(RangeReader):
    """Async filesystems: coroutines on the filesystem's loop, timeout per request."""

    def __init__(self, fs: fsspec.AbstractFileSystem, **kw: Any) -> None:
        super().__init__(fs, **kw)
        self._sem: Optional[asyncio.Semaphore] = None

    def submit(self, path: str, start: int, end: int, url: Optional[str] = None,
               version: Optional[str] = None) -> "Future[bytes]":
        url = url or path
        if end <= start:
            f: Future = Future()
            f.set_result(b"")
            return f
        return asyncio.run_coroutine_threadsafe(
            self._aread(path, start, end, url, etag_of(version)), self.fs.loop)

    async def _aread(self, path: str, start: int, end: int, url: str,
                     etag: Optional[str] = None) -> bytes:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        kind = _pinning_kind(self.fs) if etag else None
        direct = s3_direct.enabled_for(self.fs)

        async def direct_or_fs() -> bytes:
            data = await s3_direct.get_range(self.fs, path, start, end, etag, url)
            if data is None:   # refused as a presigned GET, or other internals: s3fs
                return await (_s3_get_pinned(self.fs, path, start, end, etag, url) if etag
                              else self.fs._cat_file(path, start=start, end=end))
            return data

        def call() -> Awaitable[bytes]:
            if direct:   # a presigned GET: about half botocore's client CPU per request
                return direct_or_fs()
            if kind == "s3":
                return _s3_get_pinned(self.fs, path, start, end, etag, url)  # type: ignore[arg-type]
            if kind == "http":
                return self.fs._cat_file(path, start=start, end=end,
                                         headers={"If-Match": _quoted(etag)})  # type: ignore[arg-type]
            return self.fs._cat_file(path, start=start, end=end)

        async def attempt() -> bytes:
            data = await pinned_call(call, url, etag, start, end)
            return check_length(data, url, start, end)

        async with self._sem:
            return await self.retry.acall(attempt, url, start, end)


async def pinned_call(call: Callable[[], Awaitable[Any]], url: str, etag: Optional[str],
                      start: int, end: int) -> Any:
    """``await call()``, where a failed ``If-Match`` becomes the ObjectChangedError naming
    the object (it is not transient: retrying cannot bring the old version back)."""
    try:
        return await call()
    except ObjectChangedError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's and aiohttp's errors differ
        if etag and _precondition_failed(exc):
            raise _changed(url, etag, None, start, end) from None
        raise


def etag_of(version: Optional[str]) -> Optional[str]:
    """The ETag inside a dataset version tag (``"ETag=abc"`` -> ``"abc"``), else None."""
    if not version or not version.lower().startswith("etag="):
        return None
    tag = version.split("=", 1)[1].strip().strip('"')
    return tag or None


def _quoted(etag: str) -> str:
    return etag if etag.startswith(("W/", '"')) else f'"{etag}"'


def _pinning_kind(fs: fsspec.AbstractFileSystem) -> Optional[str]:
    mod = type(fs).__module__
    if mod.startswith("s3fs"):
        return "s3"
    if mod.startswith("fsspec.implementations.http"):
        return "http"
    return None


def _changed(url: str, etag: str, now: Optional[str], start: int, end: int) -> ObjectChangedError:
    seen = f"ETag {now!r} now, " if now else ""
    return ObjectChangedError(
        f"the object changed since the dataset was opened ({seen}ETag {etag!r} at open): "
        "its bytes no longer match the index read then; reopen the dataset", url, start, end)


def _precondition_failed(exc: BaseException) -> bool:
    """An answer of 412 Precondition Failed (the If-Match did not hold), however wrapped."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is None:
            continue
        if getattr(e, "status", None) == 412 or getattr(e, "status_code", None) == 412:
            return True
        resp = getattr(e, "response", None)
        if isinstance(resp, dict) and (
                resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
                or resp.get("Error", {}).get("Code") == "PreconditionFailed"):
            return True
        if "precondition" in str(e).lower().replace("-", ""):
            return True
    return False


async def _s3_get_pinned(fs: Any, path: str, start: int, end: int, etag: str, url: str) -> bytes:
    """One ranged GetObject with ``IfMatch``; the answer's ETag is checked too (a server
    that ignores the condition still cannot hand over another version's bytes)."""
    bucket, key, vers = fs.split_path(path)
    kw: Dict[str, Any] = {"VersionId": vers} if vers else {}
    resp = await fs._call_s3("get_object", Bucket=bucket, Key=key,
                             Range=f"bytes={start}-{end - 1}", IfMatch=_quoted(etag), **kw)
    try:
        now = str(resp.get("ETag") or "").strip('"')
        if now and now != etag:
            raise _changed(url, etag, now, start, end)
        return await resp["Body"].read()
    finally:
        resp["Body"].close()


def make_range_reader(fs: fsspec.AbstractFileSystem, *, concurrency: int = DEFAULT_CONCURRENCY,
                      retry: Optional[RetryPolicy] = None) -> RangeReader:
    """The best :class:`RangeReader` for ``fs`` (see the module docstring)."""
    from fsspec.implementations.local import LocalFileSystem
    kw = dict(concurrency=concurrency, retry=retry)
    if isinstance(fs, LocalFileSystem):
        return LocalRangeReader(fs, **kw)
    if getattr(fs, "async_impl", False) and getattr(fs, "loop", None) is not None:
        return AsyncRangeReader(_without_client_retries(fs), **kw)
    if type(fs).__module__.startswith("hdfs_native"):
        return HandleRangeReader(fs, **kw)
    return RangeReader(fs, **kw)
