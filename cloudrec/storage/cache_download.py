"""One shard's cache download: streamed GETs, the chunks readers wait for first.

A download fills ``[0, size)`` of a temp file with one GET per chunk of
:func:`chunk_bounds` (16 MB where GETs stream), so the number of GETs is
fixed by the shard's size (the simulator counts the same).  Each GET is
streamed (:func:`cloudrec.storage.stream_read.stream_range`): its bytes are
written as they arrive and reported in ``PIECE`` steps, so a reader waits for
its own bytes, not for the end of the request carrying them.  A chunk that
holds bytes readers wait for (``wants()``) starts before any other, in slots
of its own; the rest follow in file order, and no new background GET starts
while a wanted chunk is being fetched or waits for a slot (wanted bytes get
the link to themselves).  Every byte is fetched once, also across a
downloader that died: its successor is given the runs already on disk and
fetches only the rest of each chunk.
"""
from __future__ import annotations

import bisect
import itertools
import os
import queue
import zlib
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from cloudrec.errors import StorageError
from cloudrec.storage import cache_files
from cloudrec.storage.cache_files import crc32_combine, write_all
from cloudrec.storage.stored_checksum import StoredChecksum

PIECE = 256 << 10        # progress granularity: what a waiting reader can see arrive
DOWNLOAD_CHUNK = 16 << 20  # one streamed GET of a download
WHOLE_CHUNK = 8 << 20      # the same where GETs cannot stream (each is held in memory whole)
FIRST_CHUNK = DOWNLOAD_CHUNK  # streamed GETs need no small first chunk to start early
DOWNLOAD_WINDOW = 2      # background GETs in flight per download
URGENT_WINDOW = 8        # GETs for wanted ranges in flight per download
URGENT_ALONE = True      # no background GET starts while a wanted chunk is fetched
POLL_S = 0.02            # how often a download with every slot busy looks for new wants

Span = Tuple[int, int]
Want = Union[int, Span]
StreamFn = Callable[[int, int, Callable[[int, bytes], None]], "Future[None]"]


def chunk_bounds(size: int, chunk: int = DOWNLOAD_CHUNK, first: int = FIRST_CHUNK) -> List[Span]:
    """``[(start, end)]`` covering ``[0, size)`` in file order: a first chunk of ``first``
    bytes, then doubling up to ``chunk`` (``first=chunk``: equal chunks).  A download
    no reader asks anything of makes exactly these GETs."""
    if size <= 0:
        return []
    if size <= chunk:
        return [(0, size)]
    out, a, n = [], 0, max(1, min(first, chunk))
    while a < size:
        b = min(size, a + n)
        out.append((a, b))
        a, n = b, min(chunk, n * 2)
    return out


def _from_submit(submit: Callable[[int, int], "Future[bytes]"]) -> StreamFn:
    """A stream function over a plain ``submit(a, b) -> Future[bytes]`` (one piece at the end)."""
    def stream(a: int, b: int, sink: Callable[[int, bytes], None]) -> "Future[None]":
        out: Future = Future()
        inner = submit(a, b)

        def done(f: Future) -> None:
            try:
                sink(a, f.result())
                out.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - raised by the download loop
                if not out.done():
                    out.set_exception(exc)
        inner.add_done_callback(done)
        return out
    return stream


class _Get:
    """One GET of the download: its range, how much of it is written, and reported."""

    __slots__ = ("a", "b", "pos", "reported", "urgent", "future", "crc", "stored")

    def __init__(self, a: int, b: int, urgent: bool) -> None:
        self.a, self.b, self.pos, self.reported, self.urgent = a, b, a, a, urgent
        self.future: Optional[Future] = None
        self.crc: Optional[int] = 0   # zlib.crc32 of [a, pos); None if pieces came out of order
        self.stored: Optional[StoredChecksum] = None   # the store's checksum of the object


def download_ranges(submit: Optional[Callable[[int, int], "Future[bytes]"]], size: int,
                    chunk: int = DOWNLOAD_CHUNK,
                    on_chunk: Optional[Callable[[int, int], None]] = None,
                    first: int = FIRST_CHUNK,
                    wants: Optional[Callable[[], Sequence[Want]]] = None,
                    stream: Optional[StreamFn] = None, checked: bool = False,
                    url: str = "") -> Callable[[str], Optional[int]]:
    """A ``download(tmp_path)`` that fetches ``[0, size)`` into the file (see the module doc)
    and returns the file's ``zlib.crc32``, checksummed from the bytes as they arrived
    (each GET's, combined), so the cache need not read the file again; None if a GET's
    pieces did not come in order (the caller checksums the file instead).

    ``stream(a, b, sink)`` streams a range (sink(offset, data) per piece); without it
    ``submit(a, b)`` (a Future of exactly those bytes, e.g. a RangeReader with retries)
    is used, one piece per GET.  ``on_chunk(start, end)`` says ``[start, end)`` is on
    disk, in steps of ``PIECE`` (the last may be shorter).  ``wants()`` returns the
    ranges (or offsets) readers wait for since its last call.  ``first`` is the first
    background chunk's size.  The file is written in place (it may be reserved at full
    size) and truncated to ``size``; fsynced only where the kernel has no boot id
    (:data:`cloudrec.storage.cache_files.BOOT_ID` says why none is needed elsewhere: the
    fsyncs of 8 concurrent 16 MB downloads took ~130 ms each here and stalled the
    other downloads' writes, ~0.1 s of a cold epoch).
    """
    if stream is None:
        if submit is None:
            raise ValueError("download_ranges needs submit or stream")
        stream = _from_submit(submit)
    full_plan = chunk_bounds(size, chunk, first)

    def download(tmp: str, have: Sequence[Span] = ()) -> Optional[int]:
        # ``have``: runs a dead download left in ``tmp`` (ShardCache.get(resumable=True))
        plan = _missing(full_plan, have) if have else full_plan
        starts = [a for a, _ in plan]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        if on_chunk is not None:
            for a, b in have:   # on disk already: readers may take them now
                on_chunk(a, b)
        crcs: Dict[int, Optional[int]] = {}   # chunk start -> CRC of its bytes
        events: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        waiting = list(range(len(plan)))   # chunks not started, in file order
        urgent: List[int] = []             # wanted chunks, in the order they were asked for
        gets: Dict[int, _Get] = {}
        numbers = itertools.count()

        def start(i: int, is_urgent: bool) -> None:
            waiting.remove(i)
            g = _Get(*plan[i], is_urgent)
            n = next(numbers)
            gets[n] = g
            sink = lambda off, data, n=n: events.put(("data", n, off, data))  # noqa: E731
            if checked:   # the store's checksum, if it sends one, comes before the first piece
                g.future = stream(g.a, g.b, sink, lambda st, n=n: events.put(("sum", n, st)))
            else:
                g.future = stream(g.a, g.b, sink)
            g.future.add_done_callback(lambda f, n=n: events.put(("end", n, f)))

        def busy(is_urgent: bool) -> int:
            return sum(1 for g in gets.values() if g.urgent == is_urgent)

        def fill() -> None:
            if wants is not None:
                for w in wants():
                    a, b = (w, w + 1) if isinstance(w, int) else (int(w[0]), int(w[1]))
                    i0 = max(0, bisect.bisect_right(starts, a) - 1)
                    i1 = max(i0, bisect.bisect_left(starts, b) - 1)
                    urgent.extend(range(i0, i1 + 1))
            while urgent and busy(True) < URGENT_WINDOW:
                i = urgent.pop(0)
                if i in waiting:   # else on disk or in flight already
                    start(i, True)
            if any(i in waiting for i in urgent) or (URGENT_ALONE and busy(True)):
                return  # wanted chunks first, alone: no new background GET meanwhile
            urgent.clear()
            while waiting and busy(False) < DOWNLOAD_WINDOW:
                start(waiting[0], False)

        def on_data(g: _Get, off: int, data: bytes) -> None:
            write_all(fd, data, off)
            if g.stored is not None:
                g.stored.update(data)
            if g.crc is not None:
                g.crc = zlib.crc32(data, g.crc) if off == g.pos else None
            g.pos = off + len(data)
            upto = g.b if g.pos >= g.b else g.pos - g.pos % PIECE
            if upto > g.reported:
                if on_chunk is not None:
                    on_chunk(g.reported, upto)
                g.reported = upto

        try:
            try:
                fill()
                while gets:
                    try:
                        ev = events.get(timeout=POLL_S)
                    except queue.Empty:
                        fill()
                        continue
                    kind, n = ev[0], ev[1]
                    g = gets.get(n)
                    if g is None:
                        continue
                    if kind == "data":
                        on_data(g, ev[2], ev[3])
                        continue
                    if kind == "sum":
                        if g.a == 0 and g.b == size and g.pos == 0:
                            g.stored = ev[2]
                        continue
                    ev[2].result()  # a failed GET fails the download
                    if g.pos < g.b:
                        raise StorageError(f"a download GET of [{g.a}, {g.b}) ended at {g.pos}")
                    if g.stored is not None:
                        g.stored.check(g.crc if g.crc is not None else
                                       cache_files.crc32_file(tmp), url, size)
                    crcs[g.a] = g.crc
                    del gets[n]
                    fill()
            except BaseException:
                for g in gets.values():
                    if g.future is not None:
                        g.future.cancel()
                raise
            if waiting:  # cannot happen: every chunk gets a GET once slots free
                raise StorageError(f"download ended with {len(waiting)} chunk(s) never fetched")
            os.ftruncate(fd, size)
            if cache_files.BOOT_ID is None:   # else the boot-stamped CRC check stands in
                os.fsync(fd)
        finally:
            os.close(fd)
        return None if have else _file_crc(plan, crcs)   # None: the cache reads the file
    return download


def _missing(plan: Sequence[Span], have: Sequence[Span]) -> List[Span]:
    """The parts of ``plan``'s chunks not covered by the sorted runs ``have``."""
    out = []
    for a, b in plan:
        pos = a
        for ha, hb in have:
            if hb <= pos or ha >= b:
                continue
            if ha > pos:
                out.append((pos, ha))
            pos = max(pos, hb)
        if pos < b:
            out.append((pos, b))
    return out


def _file_crc(plan: Sequence[Span], crcs: Dict[int, Optional[int]]) -> Optional[int]:
    """The CRC of the chunks of ``plan`` in file order, or None if one is unknown."""
    total = 0
    for a, b in plan:
        part = crcs.get(a)
        if part is None:
            return None
        total = crc32_combine(total, part, b - a)
    return total
