"""Streaming a shard while its cache download runs: what is on disk, who waits, what they want.

:class:`_Progress` is one shard's download as the fetcher's requests see it:
the chunks written so far (as merged spans), the requests waiting for more,
and the ranges those requests want, which the download takes as priorities
(``cloudrec.storage.cache_download.download_ranges(wants=...)``).  When another
process of the node is the one downloading, :func:`_follow` mirrors its
``<key>.part`` progress file into the same :class:`_Progress` and appends
our wants to its ``<key>.want`` file.
"""
from __future__ import annotations

import bisect
import os
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any, List, Optional, Tuple

from cloudrec.reader.streamed import StreamedRange


class _Waiter:
    """A request on a shard being downloaded: ``[a, b)``, and ``[a, pos)`` read into ``into``
    (the StreamedRange its reader fills) so far."""

    __slots__ = ("a", "b", "out", "into", "pos")

    def __init__(self, a: int, b: int, out: Future, into: StreamedRange) -> None:
        self.a, self.b, self.out, self.into, self.pos = a, b, out, into, a


class _Progress:
    """Which chunks of a shard's download are on disk, the requests waiting for more, and
    the ranges those requests want (so the download fetches them first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fd = -1
        self.done: List[Tuple[int, int]] = []  # written [start, end) spans, sorted, merged
        self._waiting: List[_Waiter] = []
        self._wants: List[Tuple[int, int]] = []   # ranges asked for, not yet taken by the download
        self.served = 0   # requests given bytes from the partial file
        self.closed = False

    def opened(self, tmp: str) -> None:
        """Read from ``tmp`` now (a new download, ours or another process's): nothing of it
        is counted as written yet."""
        fd = os.open(tmp, os.O_RDONLY)
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
            self.fd, self.done, self.closed = fd, [], False
            # a new download must hear again what the waiting requests still want
            self._wants = [(w.pos, w.b) for w in self._waiting]

    def advance(self, start: int, end: int) -> None:
        """``[start, end)`` is written: hand every waiting request what it can take now."""
        with self._lock:
            self.done = _merged(self.done + [(start, end)])
            self._waiting = [w for w in self._waiting if not self._feed(w)]

    def written(self, size: int) -> bool:
        """Is all of ``[0, size)`` on disk?"""
        with self._lock:
            return self._covers(0, size)

    def _covers(self, a: int, b: int) -> bool:
        return b <= a or self._written_to(a) >= b

    def _written_to(self, p: int) -> int:
        """The end of the written span holding offset ``p`` (``p`` if none does)."""
        k = bisect.bisect_right(self.done, (p, float("inf"))) - 1
        return self.done[k][1] if k >= 0 and self.done[k][0] <= p < self.done[k][1] else p

    def wait_for(self, start: int, end: int, out: Future, into: StreamedRange) -> None:
        """Let ``into``'s reader take ``[start, end)`` from the partial file as it is written
        (it pulls what is there when it needs more: :meth:`pull`); ``out`` is answered with
        None once all of it was read."""
        with self._lock:
            if self.closed:
                return  # the download is over: the chain answers from the finished file
            w = _Waiter(start, end, out, into)
            into.puller = lambda: self.pull(w)
            self._waiting.append(w)
            self._wants.append((w.pos, end))

    def take_wants(self) -> List[Tuple[int, int]]:
        """Ranges requested since the last call (the download's ``wants``)."""
        with self._lock:
            out, self._wants = self._wants, []
            return out

    def _feed(self, w: _Waiter) -> bool:
        """Wake ``w``'s reader if more of its range is written (under the lock; its reader
        reads it, :meth:`pull`); True once ``w`` is answered."""
        if w.out.done():
            return True
        upto = min(w.b, self._written_to(w.pos))
        if upto > w.pos:
            w.into.wake(upto - w.a)
        return False

    def pull(self, w: _Waiter) -> None:
        """Read what is written of ``w``'s range and not yet read into its StreamedRange
        (called by its reader, which waits for bytes); once it is whole, answer ``w``."""
        with self._lock:
            if self.fd < 0 or self.closed or w.out.done():
                return   # the download is over: the chain fills the rest from the entry
            upto = min(w.b, self._written_to(w.pos))
            if upto > w.pos:
                try:
                    if not w.into.read_into(self.fd, w.pos, upto - w.pos):
                        return
                except OSError:
                    return
                if w.pos == w.a:
                    self.served += 1
                w.pos = upto
            if w.pos >= w.b:
                _settle_value(w.out, None)
                if w in self._waiting:
                    self._waiting.remove(w)

    def close(self) -> None:
        """The download ended (either way): waiters left are answered by the chain."""
        with self._lock:
            self.closed = True
            self._waiting = []
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _merged(spans: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


FOLLOW_POLL_S = 0.01
FOLLOW_REREAD = 5   # polls whose stat saw no change before the progress file is read anyway


def _signature(path: str) -> Optional[Tuple[int, int, int, int]]:
    """What a write into ``path`` changes (inode, size, mtime, ctime), or None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _follow(part_path: str, prog: _Progress) -> Any:
    """While another process downloads the shard, serve our waiting requests from its temp
    file as its progress file advances, and tell it (``<key>.want``) which offsets they
    wait for; returns ``stop()``.  A poll whose ``stat`` shows the progress file unchanged
    skips reading it (a follower per shard polls every 10 ms), but every
    ``FOLLOW_REREAD``-th poll reads it regardless: a write within the filesystem's
    timestamp granularity may leave the times as they were."""
    from cloudrec.storage.cache_progress import ask_for, read_progress
    stop = threading.Event()
    want_path = part_path[:-len(".part")] + ".want"

    def run() -> None:
        tmp, seen, sig, unchanged = None, set(), None, 0
        while not stop.is_set():
            now = _signature(part_path)
            if tmp is None or now is None or now != sig or unchanged >= FOLLOW_REREAD:
                sig, unchanged = now, 0
                state = read_progress(part_path)
                if state is not None:
                    done, path = state
                    try:
                        if path != tmp:
                            prog.opened(path)   # (re)builds the wants of the waiting requests
                            tmp, seen = path, set()
                        for span in done:       # runs: a run that grew is a new span
                            if span not in seen:
                                seen.add(span)
                                prog.advance(*span)
                    except OSError:
                        tmp = None  # that download ended (or failed); look again
            else:
                unchanged += 1
            if tmp is not None:
                try:
                    if not ask_for(want_path, prog.take_wants()):
                        tmp = None  # no want file: that download ended; look again
                except OSError:
                    tmp = None
            stop.wait(FOLLOW_POLL_S)

    t = threading.Thread(target=run, name="cloudrec-cache-follow", daemon=True)
    t.start()

    def end() -> None:
        stop.set()
        t.join(1.0)
        prog.close()  # reads from now on come from the published entry (or our download)
    return end


def _settle_value(out: Future, value: Any) -> None:
    try:
        out.set_result(value)
    except InvalidStateError:
        pass  # answered already (streamed, then the chain came by)
