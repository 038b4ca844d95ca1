"""The `.idx` index: ``key\\toffset`` lines, parsed with numpy in bulk.

MXNet writes ``"%s\\t%d\\n" % (key, offset)`` with the offset of a record's
first part.  Lengths are derived from sorted offsets and the `.rec` size.
"""
from __future__ import annotations

import re
import warnings
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

from cloudrec.errors import IndexFileError




def _fast_int_pairs(text: bytes) -> Optional[np.ndarray]:
    """All integers of a well-formed int-keyed `.idx`, or None when it is not well-formed."""
    body = text.strip()
    if b"\n\n" in body:
        return None
    n = body.count(b"\n") + 1
    if body.count(b"\t") != n:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nums = np.fromstring(text, dtype=np.int64, sep=" ")
        except ValueError:
            return None
    if nums.size != 2 * n:
        return None
    if b" " in body:  # "1\t0 5": a space would pass for a separator; parse line by line
        return None
    # exactly one tab per line (equal totals can hide "1\t2\t3" next to "4")
    raw = np.frombuffer(body, np.uint8)
    tabs, nls = np.flatnonzero(raw == 9), np.flatnonzero(raw == 10)
    if tabs.size != n or nls.size != n - 1 or (tabs[1:] < nls).any() or (tabs[:-1] > nls).any():
        return None
    # fromstring clamps numbers beyond int64; let the exact parse judge those
    if (nums == np.iinfo(np.int64).max).any() or (nums == np.iinfo(np.int64).min).any():
        return None
    # fromstring accepts "1.5" as 1 and "+3"; re-check the rare non-digit bytes cheaply
    if re.search(rb"[^0-9\t\n\r -]", text):
        return None
    return nums


def parse_idx(data: bytes, url: Optional[str] = None,
              key_type: Optional[Callable] = int) -> Tuple[np.ndarray, np.ndarray]:
    """Parse `.idx` bytes into ``(keys, offsets)`` in file line order.

    ``keys`` is an int64 array when ``key_type`` is ``int`` (the fast path: a
    million lines in well under a second), else an object array of
    ``key_type(str)``.  ``offsets`` is int64.  Blank lines are ignored.
    """
    if isinstance(data, str):
        data = data.encode()
    text = data.replace(b"\r\n", b"\n")
    if not text.strip():
        return (np.zeros(0, np.int64) if key_type is int else np.zeros(0, object),
                np.zeros(0, np.int64))
    nums = _fast_int_pairs(text) if key_type is int else None
    if nums is not None:
        keys, offsets = nums[0::2], nums[1::2]
    else:
        lines = [ln for ln in text.split(b"\n") if ln.strip()]
        n = len(lines)
        keys_list, offs = [], []
        for i, ln in enumerate(lines, 1):
            parts = ln.strip().split(b"\t")
            if len(parts) != 2:
                raise IndexFileError(f"expected 'key<TAB>offset', got {ln[:60]!r}", url, line=i)
            try:
                keys_list.append(key_type(parts[0].decode()))
                offs.append(int(parts[1]))
            except ValueError as exc:
                raise IndexFileError(f"bad key or offset: {exc}", url, line=i) from None
        try:
            if key_type is int:
                keys = np.asarray(keys_list, dtype=np.int64)
            else:
                keys = np.empty(n, dtype=object)
                keys[:] = keys_list
            offsets = np.asarray(offs, dtype=np.int64)
        except OverflowError:
            vals = keys_list + offs if key_type is int else offs
            i = next(j for j, v in enumerate(vals) if not -2**63 <= v < 2**63) % n
            raise IndexFileError("key or offset beyond the int64 range", url, line=i + 1) from None
    if (offsets < 0).any():
        i = int(np.flatnonzero(offsets < 0)[0])
        raise IndexFileError(f"negative offset {offsets[i]}", url, line=i + 1)
    if (offsets % 4).any():
        i = int(np.flatnonzero(offsets % 4)[0])
        raise IndexFileError(f"offset {offsets[i]} is not 4-byte aligned, so not a record head",
                             url, line=i + 1, key=keys[i])
    return keys, offsets


def format_idx_line(key, offset: int) -> str:
    """One `.idx` line exactly as MXNet writes it."""
    return "%s\t%d\n" % (str(key), offset)


def format_idx(keys: Iterable, offsets: Iterable[int]) -> bytes:
    """A whole `.idx` file's bytes."""
    return "".join(format_idx_line(k, int(o)) for k, o in zip(keys, offsets)).encode()


def record_lengths(offsets: np.ndarray, file_size: int, url: Optional[str] = None) -> np.ndarray:
    """Byte span of each record (in the order given): next sorted offset minus own.

    The last record runs to ``file_size``.  Duplicate offsets share a span.
    Raises when an offset lies at or past the end of the file.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.size == 0:
        return np.zeros(0, np.int64)
    bad = offsets >= file_size
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IndexFileError(f"offset {offsets[i]} is at or past the end of the "
                             f".rec ({file_size} bytes)", url, line=i + 1, offset=int(offsets[i]))
    uniq = np.unique(offsets)
    ends = np.append(uniq[1:], file_size)
    pos = np.searchsorted(uniq, offsets)
    return ends[pos] - offsets


MIN_RECORD_BYTES = 8  # a record is at least its part header (magic + lrec)


def check_index(keys: np.ndarray, offsets: np.ndarray, rec_size: int, *,
                idx_url: Optional[str] = None, rec_url: Optional[str] = None) -> np.ndarray:
    """Check that an `.idx` can describe its `.rec` and return each record's byte span.

    The `.idx` is authoritative, so anything it cannot mean is an error naming
    both files: no records for a non-empty `.rec`, an offset at or past the
    end (a `.rec` cut, even at a record boundary), the same offset twice, no
    record at offset 0 (e.g. the first line lost) and spans shorter than a
    part header.  Cheap: it uses the offsets and the `.rec` size only.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    rec = rec_url if rec_url is not None else "the .rec"
    mismatch = f"the index does not match {rec}"

    def fail(msg: str, i: Optional[int] = None) -> IndexFileError:
        if rec not in msg:
            msg = f"{msg}; {mismatch}"
        if i is None:
            return IndexFileError(msg, idx_url)
        key = keys[i] if keys is not None and len(keys) > i else None
        return IndexFileError(msg, idx_url, line=i + 1, key=key,
                              offset=int(offsets[i]))

    n = offsets.size
    if n == 0:
        if rec_size > 0:  # e.g. im2rec killed before its .idx was flushed
            raise IndexFileError(f"the index lists no records but {rec} holds {rec_size} "
                                 "bytes; rebuild the index (cloudrec index)", idx_url)
        return np.zeros(0, np.int64)
    bad = np.flatnonzero(offsets >= rec_size)
    if bad.size:
        i = int(bad[0])
        raise fail(f"offset {offsets[i]} is at or past the end of {rec} ({rec_size} bytes): "
                   f"the .rec is truncated or the index belongs to another file", i)
    order = np.argsort(offsets, kind="stable")
    srt = offsets[order]
    dup = np.flatnonzero(srt[1:] == srt[:-1])
    if dup.size:
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise fail(f"offset {offsets[b]} is listed twice (lines {a + 1} and {b + 1}): "
                   "one record would be read twice", b)
    if srt[0] != 0:
        i = int(order[0])
        raise fail(f"no record listed at offset 0 (the first listed is at {srt[0]}): the "
                   "index lost its first line(s), or the .rec has unlisted records", i)
    ends = np.append(srt[1:], rec_size)
    short = np.flatnonzero(ends - srt < MIN_RECORD_BYTES)
    if short.size:
        j = int(short[0])
        i = int(order[j])
        raise fail(f"record at offset {srt[j]} spans {int(ends[j] - srt[j])} bytes, less "
                   f"than a record header ({MIN_RECORD_BYTES})", i)
    lengths = np.empty(n, np.int64)
    lengths[order] = ends - srt
    return lengths
