"""Streaming range reads: the bytes of one GET handed over while they arrive.

A shard-cache download writes its shard to disk piece by piece, so a record
can be read long before the request carrying it ends (a record 7 MB into an
8 MB chunk no longer waits for the last byte of the chunk).
:func:`stream_range` does that on S3: one GET (presigned, see
:mod:`cloudrec.storage.s3_direct`; else an s3fs ``GetObject``) whose body is read in
blocks, pinned to the version seen at open like every other read
(``If-Match`` plus a check of the answer's ETag), and resumed from the last
byte received when the retry policy retries it (a reset mid-body costs the
bytes not yet received, not the whole range).  Backends without a streaming
body fall back to one ranged read handed over in one piece.
"""
from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Future
from typing import Any, Awaitable, Callable, Optional

from cloudrec.errors import StorageError
from cloudrec.storage import s3_direct
from cloudrec.storage.ranged import (AsyncRangeReader, RangeReader, _changed, _pinning_kind,
                                     _quoted, etag_of, pinned_call)
from cloudrec.storage.retry import ShortReadError
from cloudrec.storage.stored_checksum import StoredChecksum, covers_whole, from_response

READ_BLOCK = 256 << 10  # the most one body read asks for
Sink = Callable[[int, bytes], None]  # sink(offset, data): consecutive pieces of the range
OnChecksum = Callable[[StoredChecksum], None]


def can_stream(reader: RangeReader) -> bool:
    """Does ``reader`` hand over a range's bytes while they arrive (S3 through s3fs)?"""
    return isinstance(reader, AsyncRangeReader) and _pinning_kind(reader.fs) == "s3"


def stream_range(reader: RangeReader, path: str, start: int, end: int, sink: Sink,
                 url: Optional[str] = None, version: Optional[str] = None, *,
                 direct: bool = True, checksum: Optional[OnChecksum] = None) -> "Future[None]":
    """Read ``[start, end)`` of ``path``, calling ``sink(offset, data)`` for each piece in
    order (from the reader's event loop, or a pool thread on the fallback); the Future
    ends when every byte was handed over, or with the read's error.  Cancelling it
    abandons the read.  ``direct=False`` keeps S3 on botocore's GetObject.

    ``checksum``: S3 is asked for the object's stored checksum (botocore's GetObject,
    since a presigned URL cannot portably ask for it), and when the GET covers the
    whole object and one comes back, ``checksum(stored)`` is called before the first
    piece; the caller feeds and checks it (:mod:`cloudrec.storage.stored_checksum`).
    Other backends never call it."""
    url = url or path
    if end <= start:
        done: Future = Future()
        done.set_result(None)
        return done
    if can_stream(reader):
        assert isinstance(reader, AsyncRangeReader)
        return asyncio.run_coroutine_threadsafe(
            _astream(reader, path, start, end, url, etag_of(version), sink,
                     direct and checksum is None, checksum),
            reader.fs.loop)
    return _whole(reader, path, start, end, sink, url, version)


def _whole(reader: RangeReader, path: str, start: int, end: int, sink: Sink, url: str,
           version: Optional[str]) -> "Future[None]":
    out: Future = Future()
    inner = reader.submit(path, start, end, url, version=version)

    def hand_over(f: Future) -> None:
        if out.done():
            return
        try:
            data = f.result()
            sink(start, data)
        except BaseException as exc:  # noqa: BLE001 - the caller's to report
            _set(out, exc)
            return
        _set(out, None, ok=True)

    inner.add_done_callback(hand_over)
    out.add_done_callback(lambda o: inner.cancel() if o.cancelled() else None)
    return out


def _set(out: Future, value: Any, ok: bool = False) -> None:
    try:
        if ok:
            out.set_result(value)
        else:
            out.set_exception(value)
    except Exception:  # noqa: BLE001 - cancelled meanwhile
        pass


def _body_reader(body: Any, checked: bool) -> Callable[[int], Awaitable[bytes]]:
    """``body.read``; but when the caller checks the stored checksum itself (from the CRC
    it computes anyway), a read that skips botocore's checksumming wrapper, which would
    compute a second CRC of every byte (~0.4 ms of CPU per MB here) and validate it only
    on a read past the end, which a ranged reader never makes."""
    if checked:
        try:
            from aiobotocore.response import AioStreamingBody
        except ImportError:   # pragma: no cover - s3fs always brings aiobotocore
            return body.read
        if isinstance(body, AioStreamingBody):
            return functools.partial(AioStreamingBody.read, body)
    return body.read


async def _astream(reader: AsyncRangeReader, path: str, start: int, end: int, url: str,
                   etag: Optional[str], sink: Sink, use_direct: bool = True,
                   checksum: Optional[OnChecksum] = None) -> None:
    fs: Any = reader.fs
    if reader._sem is None:
        reader._sem = asyncio.Semaphore(reader.concurrency)
    bucket, key, vers = fs.split_path(path)
    pos = start

    async def pump(read: Callable[[int], Awaitable[bytes]]) -> None:
        """Hand the body over in blocks until ``end``; ``pos`` is where a retry resumes."""
        nonlocal pos
        while pos < end:
            data = await read(min(READ_BLOCK, end - pos))
            if not data:
                raise ShortReadError(f"the body ended {end - pos} bytes early", url, start, end)
            if len(data) > end - pos:
                data = data[:end - pos]
            sink(pos, data)
            pos += len(data)

    async def direct() -> None:   # a presigned GET: about half botocore's client CPU
        async with s3_direct.response(fs, path, pos, end, etag, url) as resp:
            await pump(resp.content.read)

    async def attempt() -> None:
        if use_direct and await s3_direct.usable(fs):
            try:
                return await pinned_call(direct, url, etag, pos, end)
            except s3_direct.UseS3fs:
                pass   # refused as a presigned GET: s3fs from now on for this client
        kw: dict = {"VersionId": vers} if vers else {}
        if etag:
            kw["IfMatch"] = _quoted(etag)
        if checksum is not None:
            kw["ChecksumMode"] = "ENABLED"
        resp = await pinned_call(lambda: fs._call_s3("get_object", Bucket=bucket, Key=key,
                                                     Range=f"bytes={pos}-{end - 1}", **kw),
                                 url, etag, pos, end)
        body = resp["Body"]
        try:
            now = str(resp.get("ETag") or "").strip('"')
            if etag and now and now != etag:
                raise _changed(url, etag, now, pos, end)
            got = str(resp.get("ContentRange") or "")
            if pos and not got.startswith(f"bytes {pos}-"):
                raise StorageError(f"the server ignored the byte range (answered {got!r})",
                                   url, pos, end)
            checked = False
            if checksum is not None and pos == start and covers_whole(got, start, end):
                stored = from_response(resp)
                if stored is not None:
                    checksum(stored)
                    checked = True
            await pump(_body_reader(body, checked))
        finally:
            body.close()

    async with reader._sem:
        await reader.retry.acall(attempt, url, start, end)
