"""The global record table: (shard, key, offset, length) for every record, in numpy.

A million records cost four arrays, not a million Python objects.  Lengths
come from sorted offsets and the shard size (``record_lengths``); without an
`.idx`, the table is rebuilt by scanning the `.rec` for record heads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from cloudrec.errors import IndexFileError
from cloudrec.format.framing import find_record_heads
from cloudrec.format.idx import check_index, parse_idx, record_lengths

SCAN_CHUNK = 16 << 20


@dataclass
class RecordTable:
    """Columns of the record table; row ``i`` is global record id ``i``.

    ``shard`` int32, ``key`` int64 (object for string keys), ``offset`` and
    ``length`` int64 (length = bytes from the record head to the next head).
    ``crc``: uint32 ``zlib.crc32`` of each record's ``[offset, offset + length)``
    bytes, from a dataset table written with ``cloudrec index --table --crc``
    (None otherwise); readers check every record against it.
    """

    shard: np.ndarray
    key: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    crc: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    @property
    def nbytes(self) -> int:
        """Total bytes the records span."""
        return int(self.length.sum())

    @classmethod
    def concat(cls, parts: Sequence["RecordTable"]) -> "RecordTable":
        """Stack per-shard tables (their ``shard`` columns already set)."""
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(0, np.int64),
                       np.zeros(0, np.int64), np.zeros(0, np.int64))
        keys = [p.key for p in parts]
        if any(k.dtype == object for k in keys):
            key = np.empty(sum(len(k) for k in keys), dtype=object)
            pos = 0
            for k in keys:
                key[pos:pos + len(k)] = k
                pos += len(k)
        else:
            key = np.concatenate(keys).astype(np.int64)
        crc = None   # kept only when every part has one
        if all(p.crc is not None for p in parts):
            crc = np.concatenate([p.crc for p in parts]).astype(np.uint32)
        return cls(np.concatenate([p.shard for p in parts]).astype(np.int32), key,
                   np.concatenate([p.offset for p in parts]).astype(np.int64),
                   np.concatenate([p.length for p in parts]).astype(np.int64), crc)


def table_from_idx(shard_no: int, idx_bytes: bytes, rec_size: int, *, idx_url: str,
                   rec_url: str, key_type: Any = None) -> RecordTable:
    """Parse one shard's `.idx` into a table; an index that cannot describe the `.rec`
    (offsets past its end, duplicates, nothing at offset 0) raises IndexFileError
    naming both files (``cloudrec.format.idx.check_index``).

    ``key_type=None`` tries int keys and falls back to str keys.
    """
    if key_type is None:
        try:
            keys, offsets = parse_idx(idx_bytes, idx_url, key_type=int)
        except IndexFileError:
            keys, offsets = parse_idx(idx_bytes, idx_url, key_type=str)
    else:
        keys, offsets = parse_idx(idx_bytes, idx_url, key_type=key_type)
    lengths = check_index(keys, offsets, rec_size, idx_url=idx_url, rec_url=rec_url)
    return RecordTable(np.full(len(offsets), shard_no, np.int32), keys, offsets, lengths)


def table_from_scan(shard_no: int, read_chunk, rec_size: int) -> RecordTable:
    """Rebuild a shard's table by scanning for record heads (no `.idx`).

    ``read_chunk(start, end) -> bytes`` reads the `.rec`; chunks are 4-aligned
    and overlap by one word so a head split across chunks is still found.
    Keys are record ordinals within the shard.
    """
    heads: List[np.ndarray] = []
    pos = 0
    while pos < rec_size:
        end = min(rec_size, pos + SCAN_CHUNK + 4)
        buf = read_chunk(pos, end)
        found = find_record_heads(buf, base_offset=pos)
        if end < rec_size:
            found = found[found < pos + SCAN_CHUNK]
        heads.append(found)
        pos += SCAN_CHUNK
    offsets = np.concatenate(heads) if heads else np.zeros(0, np.int64)
    offsets = np.unique(offsets)
    lengths = record_lengths(offsets, rec_size)
    return RecordTable(np.full(len(offsets), shard_no, np.int32),
                       np.arange(len(offsets), dtype=np.int64), offsets, lengths)
