"""One shard's cache download: large streamed GETs, the ranges readers wait for first.

A download fills ``[0, size)`` of a temp file with concurrent GETs of at most
``chunk`` bytes.  Each GET is streamed (:func:`cloudrec.storage.stream_read.stream_range`):
its bytes are written as they arrive and reported in ``PIECE`` steps, so a
reader waits for its own bytes, not for the end of the request carrying them.
A range that readers wait for (``wants()``) and that no GET covers yet gets
a GET of its own, in slots of its own, starting at the wanted byte and going
on in file order (so the records after it come with it); the rest of the
shard follows in file order, and no new background GET starts while a wanted
range is being fetched or waits for a slot (a wanted range gets the link to
itself).  Every byte is fetched once; a shard no reader asks
anything of is one GET per ``chunk``.
"""
from __future__ import annotations

import bisect
import itertools
import os
import queue
from concurrent.futures import Future
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from cloudrec.errors import StorageError
from cloudrec.storage.cache_files import write_all

PIECE = 256 << 10        # progress granularity: what a waiting reader can see arrive
DOWNLOAD_CHUNK = 64 << 20  # the largest single GET of a download (streamed: no latency cost)
FIRST_CHUNK = DOWNLOAD_CHUNK  # streamed GETs need no small first chunk to start early
DOWNLOAD_WINDOW = 2      # background GETs in flight per download
URGENT_WINDOW = 8        # GETs for wanted ranges in flight per download
URGENT_ALONE = True      # no background GET starts while a wanted range is fetched
CARVE_MIN = 4 << 20      # a want this close to its hole's start is fetched from the hole's start (one GET fewer)
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


def take(holes: List[Span], a: int, b: int) -> List[Span]:
    """Remove ``[a, b)`` from the sorted, disjoint ``holes``; return the parts that were holes."""
    got: List[Span] = []
    keep: List[Span] = []
    for h0, h1 in holes:
        lo, hi = max(a, h0), min(b, h1)
        if lo >= hi:
            keep.append((h0, h1))
            continue
        got.append((lo, hi))
        if h0 < lo:
            keep.append((h0, lo))
        if hi < h1:
            keep.append((hi, h1))
    holes[:] = keep
    return got


def _split(spans: Iterable[Span], chunk: int) -> List[Span]:
    out = []
    for a, b in spans:
        while a < b:
            out.append((a, min(b, a + chunk)))
            a += chunk
    return out


def _aligned(w: Want, size: int) -> Span:
    a, b = (w, w + 1) if isinstance(w, int) else (int(w[0]), int(w[1]))
    a = max(0, a - a % PIECE)
    b = min(size, -(-b // PIECE) * PIECE)
    return a, b


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

    __slots__ = ("a", "b", "pos", "reported", "urgent", "future")

    def __init__(self, a: int, b: int, urgent: bool) -> None:
        self.a, self.b, self.pos, self.reported, self.urgent = a, b, a, a, urgent
        self.future: Optional[Future] = None


def download_ranges(submit: Optional[Callable[[int, int], "Future[bytes]"]], size: int,
                    chunk: int = DOWNLOAD_CHUNK,
                    on_chunk: Optional[Callable[[int, int], None]] = None,
                    first: int = FIRST_CHUNK,
                    wants: Optional[Callable[[], Sequence[Want]]] = None,
                    stream: Optional[StreamFn] = None) -> Callable[[str], None]:
    """A ``download(tmp_path)`` that fetches ``[0, size)`` into the file (see the module doc).

    ``stream(a, b, sink)`` streams a range (sink(offset, data) per piece); without it
    ``submit(a, b)`` (a Future of exactly those bytes, e.g. a RangeReader with retries)
    is used, one piece per GET.  ``on_chunk(start, end)`` says ``[start, end)`` is on
    disk, in steps of ``PIECE`` (the last may be shorter).  ``wants()`` returns the
    ranges (or offsets) readers wait for since its last call.  ``first`` is the first
    background chunk's size.  The file is written in place (it may be reserved at full
    size), truncated to ``size`` and fsynced.
    """
    if stream is None:
        if submit is None:
            raise ValueError("download_ranges needs submit or stream")
        stream = _from_submit(submit)
    ends = [b for _, b in chunk_bounds(size, chunk, first)]

    def download(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        events: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        holes: List[Span] = [(0, size)] if size > 0 else []
        urgent: List[Span] = []
        gets: Dict[int, _Get] = {}
        numbers = itertools.count()

        def start(g: _Get) -> None:
            n = next(numbers)
            gets[n] = g
            g.future = stream(g.a, g.b, lambda off, data, n=n: events.put(("data", n, off, data)))
            g.future.add_done_callback(lambda f, n=n: events.put(("end", n, f)))

        def busy(is_urgent: bool) -> int:
            return sum(1 for g in gets.values() if g.urgent == is_urgent)

        def fill() -> None:
            if wants is not None:
                urgent.extend(_aligned(w, size) for w in wants())
            while urgent and busy(True) < URGENT_WINDOW:
                a, b = urgent.pop(0)
                hit = next(((h0, h1) for h0, h1 in holes if h0 < b and a < h1), None)
                if hit is None:
                    continue  # on disk or in flight already
                lo = max(a, hit[0])
                if lo - hit[0] < CARVE_MIN:
                    lo = hit[0]  # close to the hole's start: one GET from there serves it soon
                hi = min(hit[1], lo + chunk)  # from the wanted byte on, as one GET allows
                take(holes, lo, hi)
                start(_Get(lo, hi, True))
                if hi < b:
                    urgent.insert(0, (hi, b))
            if urgent or (URGENT_ALONE and busy(True)):
                return  # wanted ranges first, alone: no new background GET meanwhile
            while holes and busy(False) < DOWNLOAD_WINDOW:
                a = holes[0][0]   # the first hole, up to the plan's next chunk end
                b = min(holes[0][1], ends[bisect.bisect_right(ends, a)])
                for sa, sb in take(holes, a, b):
                    start(_Get(sa, sb, False))

        def on_data(g: _Get, off: int, data: bytes) -> None:
            write_all(fd, data, off)
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
                    ev[2].result()  # a failed GET fails the download
                    if g.pos < g.b:
                        raise StorageError(f"a download GET of [{g.a}, {g.b}) ended at {g.pos}")
                    del gets[n]
                    fill()
            except BaseException:
                for g in gets.values():
                    if g.future is not None:
                        g.future.cancel()
                raise
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
    return download
