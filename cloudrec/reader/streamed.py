"""A record request whose bytes are readable while its GET is still running.

The fetcher merges neighbouring records into requests of up to
``max_request`` bytes.  Read as one blob, the first record of a 16 MB request
waits for the request's last byte; streamed (S3, see
:mod:`cloudrec.storage.stream_read`), each record waits only for its own
bytes, so large requests (few GETs, the cheap way to read object storage) no
longer cost latency.  :class:`StreamedRange` is the buffer such a GET fills:
``view(upto)`` blocks until the first ``upto`` bytes are there, or raises the
GET's error.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

from cloudrec.errors import StorageError
from cloudrec.storage.ranged import RangeReader
from cloudrec.storage.stream_read import can_stream, stream_range

WAIT_S = 0.5  # a waiting reader re-checks the GET this often (it is also woken at its end)


class StreamedRange:
    """``[start, end)`` of one shard, filled in order: by a streamed GET (:meth:`sink`), or by
    its reader from a shard's partial cache file (``puller``, :meth:`read_into`)."""

    __slots__ = ("start", "size", "buf", "got", "future", "_cond", "puller", "_gen", "_want")

    def __init__(self, start: int, end: int, buffer: bool = True) -> None:
        self.start, self.size = start, end - start
        # ``buffer=False``: made when the first bytes come (:meth:`fill` may never need one)
        self.buf: Any = bytearray(self.size) if buffer else None
        self.got = 0   # bytes received from ``start`` on
        self.future: Optional[Future] = None
        self._cond = threading.Condition()
        # filled on demand (a shard being downloaded): ``puller()`` reads what is written
        self.puller: Optional[Callable[[], None]] = None
        self._gen = 0   # bumped by wake(): the bytes a reader waits for may be there to pull
        self._want = 0  # how many bytes from ``start`` the waiting reader needs

    def sink(self, offset: int, data: bytes) -> None:
        """The GET's next piece (from its event loop): copy it in, wake the readers."""
        i = offset - self.start
        self._buffer()[i:i + len(data)] = data   # same length: never resizes the buffer
        with self._cond:
            self.got = i + len(data)
            self._cond.notify_all()

    def _buffer(self) -> bytearray:
        if self.buf is None:   # made when the first bytes come
            self.buf = bytearray(self.size)
        return self.buf

    def read_into(self, fd: int, offset: int, n: int) -> bool:
        """Read the range's next ``n`` bytes, at ``offset`` of the file ``fd``, straight into
        the buffer (one copy, none through an intermediate bytes object); False if short."""
        i = offset - self.start
        if os.preadv(fd, [memoryview(self._buffer())[i:i + n]], offset) != n:
            return False
        with self._cond:
            self.got = i + n
            self._cond.notify_all()
        return True

    def fill(self, data: bytes) -> None:
        """The whole range at once (read from the finished file): kept as it is, no copy."""
        with self._cond:
            self.buf, self.got = data, len(data)
            self._cond.notify_all()

    def wake(self, written: int) -> None:
        """The first ``written`` bytes of the range are on disk: a reader waiting for no more
        than those pulls them (not one wake-up per piece of the download)."""
        with self._cond:
            if written >= self._want:
                self._gen += 1
                self._cond.notify_all()

    def _ended(self, _f: Future) -> None:
        with self._cond:
            self._cond.notify_all()

    def cancel(self) -> bool:
        return self.future.cancel() if self.future is not None else False

    def view(self, upto: int, url: str, start: int, end: int) -> memoryview:
        """The buffer once its first ``upto`` bytes arrived; the GET's error otherwise."""
        from cloudrec.reader.cached import result
        while self.got < upto and not (self.future is not None and self.future.done()):
            with self._cond:
                self._want, gen = upto, self._gen
            if self.puller is not None:   # (no lock of ours held: the puller takes its own)
                self.puller()
                if self.got >= upto:
                    break
            with self._cond:
                if gen == self._gen and self.got < upto and not (
                        self.future is not None and self.future.done()):
                    self._cond.wait(WAIT_S)
        if self.got < upto:
            result(self.future, url, start, end)  # type: ignore[arg-type]  # raises its error
            raise StorageError(f"the read ended after {self.got} of {end - start} bytes",
                               url, start, end)
        return memoryview(self.buf if self.buf is not None else b"")


def submit_streamed(reader: RangeReader, path: str, start: int, end: int, url: str,
                    version: Optional[str]) -> Any:
    """A :class:`StreamedRange` being filled when ``reader`` can stream, else the plain
    ``Future[bytes]`` of ``reader.submit``."""
    if not can_stream(reader) or end <= start:
        return reader.submit(path, start, end, url, version=version)
    sr = StreamedRange(start, end)
    sr.future = stream_range(reader, path, start, end, sr.sink, url, version)
    sr.future.add_done_callback(sr._ended)
    return sr
