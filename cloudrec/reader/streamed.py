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

import threading
from concurrent.futures import Future
from typing import Any, Optional

from cloudrec.errors import StorageError
from cloudrec.storage.ranged import RangeReader
from cloudrec.storage.stream_read import can_stream, stream_range

WAIT_S = 0.5  # a waiting reader re-checks the GET this often (it is also woken at its end)


class StreamedRange:
    """``[start, end)`` of one shard, filled in order by a streamed GET."""

    __slots__ = ("start", "buf", "got", "future", "_cond")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.buf = bytearray(end - start)
        self.got = 0   # bytes received from ``start`` on
        self.future: Optional[Future] = None
        self._cond = threading.Condition()

    def sink(self, offset: int, data: bytes) -> None:
        """The GET's next piece (from its event loop): copy it in, wake the readers."""
        i = offset - self.start
        self.buf[i:i + len(data)] = data   # same length: never resizes the buffer
        with self._cond:
            self.got = i + len(data)
            self._cond.notify_all()

    def _ended(self, _f: Future) -> None:
        with self._cond:
            self._cond.notify_all()

    def cancel(self) -> bool:
        return self.future.cancel() if self.future is not None else False

    def view(self, upto: int, url: str, start: int, end: int) -> memoryview:
        """The buffer once its first ``upto`` bytes arrived; the GET's error otherwise."""
        from cloudrec.reader.cached import result
        if self.got < upto:
            with self._cond:
                while self.got < upto and not (self.future is not None and self.future.done()):
                    self._cond.wait(WAIT_S)
        if self.got < upto:
            result(self.future, url, start, end)  # type: ignore[arg-type]  # raises its error
            raise StorageError(f"the read ended after {self.got} of {end - start} bytes",
                               url, start, end)
        return memoryview(self.buf)


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
