"""RecordIO framing (dmlc-core's `.rec` layout), byte-compatible with MXNet.

A record is one or more *parts*: ``magic | lrec | data | pad-to-4``, with
``lrec = cflag << 29 | length``.  Aligned magic words inside a payload are
removed on write (the record is split around them) and re-inserted on read.
"""
from __future__ import annotations

import struct
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from cloudrec.errors import RecordIOError, RecordTooLargeError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
MAX_RECORD_LENGTH = (1 << 29) - 1
CFLAG_FULL, CFLAG_START, CFLAG_MIDDLE, CFLAG_END = 0, 1, 2, 3
_HEAD = struct.Struct("<II")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def ceil4(n: int) -> int:
    """Round up to a multiple of 4 (every part starts 4-byte aligned)."""
    return (n + 3) & ~3


def _aligned_magic_positions(payload: bytes) -> List[int]:
    """Offsets ``i % 4 == 0`` with ``payload[i:i+4] == MAGIC`` (vectorised)."""
    n4 = len(payload) // 4
    if n4 == 0 or MAGIC_BYTES not in payload:
        return []
    words = np.frombuffer(payload, dtype="<u4", count=n4)
    return (np.flatnonzero(words == MAGIC) * 4).tolist()


def encode_record(payload: bytes) -> bytes:
    """Frame one logical record exactly as dmlc's RecordIOWriter does."""
    payload = bytes(payload) if not isinstance(payload, bytes) else payload
    size = len(payload)
    if size > MAX_RECORD_LENGTH:
        raise RecordTooLargeError(
            f"RecordIO only accepts records smaller than 2**29 bytes, got {size}")
    cuts = _aligned_magic_positions(payload)
    if not cuts:
        return b"".join((_HEAD.pack(MAGIC, size), payload, _PAD[size & 3]))
    out = []
    dptr = 0
    for k, i in enumerate(cuts):
        flag = CFLAG_START if k == 0 else CFLAG_MIDDLE
        out.append(_HEAD.pack(MAGIC, (flag << 29) | (i - dptr)))
        out.append(payload[dptr:i])
        dptr = i + 4
    out.append(_HEAD.pack(MAGIC, (CFLAG_END << 29) | (size - dptr)))
    out.append(payload[dptr:])
    out.append(_PAD[size & 3])
    return b"".join(out)


def encoded_length(payload_len: int) -> int:
    """Bytes a record without aligned magics occupies on disk."""
    return 8 + ceil4(payload_len)


def read_record_at(buf, pos: int = 0, *, url: Optional[str] = None,
                   base_offset: int = 0, strict: bool = True) -> Tuple[bytes, int]:
    """Decode the record starting at ``buf[pos]``; return ``(payload, next_pos)``.

    ``buf`` is bytes-like.  Errors name ``url`` and the absolute offset
    ``base_offset + pos``.  With ``strict`` the cflag sequence is checked
    (start with 0 or 1, continue with 2.. and end with 3), as dmlc's chunk
    readers do.
    """
    mv = memoryview(buf)
    end = len(mv)
    parts: List[bytes] = []
    first = True
    start = pos
    while True:
        if end - pos < 8:
            if end - pos == 0 and not first:
                raise RecordIOError("record is truncated: its last part is missing",
                                    url, base_offset + start)
            raise RecordIOError(
                f"truncated part header: {end - pos} of 8 bytes", url, base_offset + pos)
        magic, lrec = _HEAD.unpack_from(mv, pos)
        if magic != MAGIC:
            raise RecordIOError(f"bad magic 0x{magic:08x} (expected 0x{MAGIC:08x})",
                                url, base_offset + pos)
        cflag, length = lrec >> 29, lrec & MAX_RECORD_LENGTH
        if cflag > 3:
            raise RecordIOError(f"invalid cflag {cflag}", url, base_offset + pos)
        if strict:
            if first and cflag not in (CFLAG_FULL, CFLAG_START):
                raise RecordIOError(f"record starts with continuation part (cflag {cflag})",
                                    url, base_offset + pos)
            if not first and cflag not in (CFLAG_MIDDLE, CFLAG_END):
                raise RecordIOError(f"expected a continuation part, got cflag {cflag}",
                                    url, base_offset + pos)
        data_end = pos + 8 + length
        padded_end = pos + 8 + ceil4(length)
        if padded_end > end:
            if data_end > end or cflag in (CFLAG_START, CFLAG_MIDDLE):
                raise RecordIOError(
                    f"truncated record: part needs {8 + ceil4(length)} bytes, "
                    f"{end - pos} left", url, base_offset + pos)
            padded_end = end  # a final part whose padding alone is cut is still readable
        parts.append(bytes(mv[pos + 8:data_end]))
        pos = padded_end
        first = False
        if cflag in (CFLAG_FULL, CFLAG_END):
            break
        parts.append(MAGIC_BYTES)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), pos


def decode_record(buf, *, url: Optional[str] = None, base_offset: int = 0) -> bytes:
    """Decode a buffer that holds exactly one record (plus optional padding)."""
    payload, nxt = read_record_at(buf, 0, url=url, base_offset=base_offset)
    rest = bytes(memoryview(buf)[nxt:])
    if rest.strip(b"\0"):
        raise RecordIOError(f"{len(rest)} unexpected bytes after the record",
                            url, base_offset + nxt)
    return payload


def iter_records(buf, *, url: Optional[str] = None, base_offset: int = 0
                 ) -> Iterator[Tuple[int, bytes]]:
    """Yield ``(offset, payload)`` for every record in a buffer of whole records."""
    pos = 0
    n = len(buf)
    while pos < n:
        payload, nxt = read_record_at(buf, pos, url=url, base_offset=base_offset)
        yield base_offset + pos, payload
        pos = nxt


def find_record_heads(buf, base_offset: int = 0) -> np.ndarray:
    """Offsets of record heads: aligned magic followed by an lrec with cflag 0 or 1.

    ``base_offset`` must be a multiple of 4 (alignment is absolute).  Used to
    rebuild a lost `.idx` and to resynchronise byte-range partitions.
    """
    if base_offset % 4:
        raise ValueError("base_offset must be 4-byte aligned")
    n4 = len(buf) // 4
    words = np.frombuffer(buf, dtype="<u4", count=n4)
    cand = np.flatnonzero(words[:-1] == MAGIC) if n4 > 1 else np.zeros(0, np.int64)
    if cand.size == 0:
        return np.zeros(0, dtype=np.int64)
    cflags = words[cand + 1] >> 29
    heads = cand[(cflags == CFLAG_FULL) | (cflags == CFLAG_START)]
    return heads.astype(np.int64) * 4 + base_offset
