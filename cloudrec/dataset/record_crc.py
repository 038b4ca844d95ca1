"""Per-record CRC32s for a dataset table: end-to-end integrity on every read path.

S3 keeps a checksum of a whole object, and the shard cache checks it on a
whole-shard download, but a ranged GET comes with none, and HTTP, HDFS or a
local disk give no checksum at all: a byte changed on the way (a broken proxy
or NIC, a bad disk) would reach the model as a silently wrong sample.
``cloudrec index --table OUT --crc`` therefore reads every shard once and stores
``zlib.crc32`` of each record's bytes ``[offset, offset + length)`` as a column
of the table; :class:`~cloudrec.reader.fetch.RecordFetcher` checks every record
it hands out against it (about 2 GB/s of CPU here) and reads a record that
does not match once more from its store before raising
:class:`~cloudrec.errors.ChecksumMismatchError`.
"""
from __future__ import annotations

import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

from cloudrec.errors import StorageError

READ_CHUNK = 16 << 20   # one ranged read while checksumming a shard
SHARDS_AT_ONCE = 8      # shards read concurrently


def _shard_crcs(reader: Any, path: str, url: str, size: int, version: Optional[str],
                offsets: np.ndarray, lengths: np.ndarray, bar: Any) -> np.ndarray:
    """CRC32 of each record ``[offsets[i], offsets[i] + lengths[i])`` of one shard, reading it
    in file order in chunks of READ_CHUNK (the next chunk in flight while one is summed)."""
    out = np.zeros(len(offsets), np.uint32)
    if not len(offsets):
        return out
    order = np.argsort(offsets, kind="stable")
    starts, ends = offsets[order], offsets[order] + lengths[order]
    if int(ends.max()) > size:
        raise StorageError(f"the table lists bytes up to {int(ends.max())} of a {size}-byte "
                           "shard", url)
    lo, hi = int(starts.min()), int(ends.max())
    chunks = [(a, min(hi, a + READ_CHUNK)) for a in range(lo, hi, READ_CHUNK)]
    crcs = [0] * len(order)
    first = 0   # the first record (in file order) not wholly behind the current chunk
    nxt = reader.submit(path, *chunks[0], url, version)
    for k, (a, b) in enumerate(chunks):
        data = memoryview(nxt.result())
        if len(data) != b - a:
            raise StorageError(f"short read ({len(data)} of {b - a} bytes)", url, a, b)
        if k + 1 < len(chunks):
            nxt = reader.submit(path, *chunks[k + 1], url, version)
        i = first
        while i < len(order) and starts[i] < b:
            s, e = max(int(starts[i]), a), min(int(ends[i]), b)
            if e > s:
                crcs[i] = zlib.crc32(data[s - a:e - a], crcs[i])
            if ends[i] <= b and i == first:
                first += 1
            i += 1
        bar.update(b - a)
    out[order] = np.asarray(crcs, np.uint32)
    return out


def record_crcs(ds: Any, progress: Optional[bool] = None) -> np.ndarray:
    """``zlib.crc32`` of every record of ``ds`` (a ShardedDataset), in table order (uint32).

    Reads each shard once (ranged reads of 16 MB, 8 shards at a time), pinned to the
    version seen at open; ``progress`` (None: when stderr is a terminal) shows a bar of
    the bytes read."""
    import sys

    from tqdm.auto import tqdm

    from cloudrec.storage.ranged import make_range_reader
    t = ds.table
    out = np.zeros(len(t), np.uint32)
    total = int(t.length.sum())
    readers: dict = {}
    lock = threading.Lock()
    with tqdm(total=total, unit="B", unit_scale=True, desc="record CRCs", file=sys.stderr,
              disable=None if progress is None else not progress) as bar:
        def one(shard_no: int) -> None:
            rows = np.flatnonzero(t.shard == shard_no)
            fs, path = ds.filesystem(shard_no)
            with lock:
                reader = readers.get(id(fs))
                if reader is None:
                    reader = readers[id(fs)] = make_range_reader(
                        fs, concurrency=2 * SHARDS_AT_ONCE)
            shard = ds.shards[shard_no]
            out[rows] = _shard_crcs(reader, path, shard.rec_url, int(shard.size), shard.version,
                                    np.asarray(t.offset[rows], np.int64),
                                    np.asarray(t.length[rows], np.int64), bar)
        try:
            with ThreadPoolExecutor(min(SHARDS_AT_ONCE, max(1, len(ds.shards)))) as pool:
                list(pool.map(one, range(len(ds.shards))))
        finally:
            for r in readers.values():
                r.close()
    return out
