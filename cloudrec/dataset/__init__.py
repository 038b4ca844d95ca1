"""Dataset layer: a list of `.rec` shards and one global record table.

``open_dataset("s3://b/train-{0000..0127}.rec")`` expands the URLs, stats
every shard and reads every `.idx` concurrently, and returns a
:class:`ShardedDataset` whose ``table`` maps a global record id to
(shard, key, offset, length).  It reads no record bytes.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from cloudrec.dataset.shards import (Shard, expand_braces, expand_urls, read_idx_bytes,
                                     sibling_idx, stat_shards)
from cloudrec.dataset.table import RecordTable, table_from_idx, table_from_scan
from cloudrec.errors import IndexFileError, RecordIOError
from cloudrec.storage.retry import RetryPolicy

__all__ = ["open_dataset", "ShardedDataset", "Shard", "RecordTable", "expand_urls",
           "expand_braces", "sibling_idx"]

UrlArg = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


class ShardedDataset:
    """Shards plus the global record table; record id ``i`` is row ``i`` of ``table``.

    Records are numbered shard by shard, in each `.idx`'s line order.
    """

    def __init__(self, shards: List[Shard], table: RecordTable,
                 storage_options: Optional[Dict[str, Any]] = None) -> None:
        self.shards = shards
        self.table = table
        self.storage_options = dict(storage_options or {})
        starts = np.zeros(len(shards) + 1, np.int64)
        if len(table):
            np.cumsum(np.bincount(table.shard, minlength=len(shards)), out=starts[1:])
        self.shard_starts = starts  # first record id of each shard
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.table)

    @property
    def nbytes(self) -> int:
        """Total size of all shards in bytes."""
        return sum(s.size for s in self.shards)

    def record_url(self, record_id: int) -> str:
        """URL of the shard holding a record."""
        return self.shards[int(self.table.shard[record_id])].rec_url

    def describe(self, record_id: int) -> str:
        """``url, key K, offset O`` for error messages."""
        t = self.table
        key = t.key[record_id]
        key = key.item() if hasattr(key, "item") else key  # 21, not np.int64(21)
        return (f"{self.record_url(record_id)}, key {key!r}, "
                f"offset {int(t.offset[record_id])}")

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["shards"] = [Shard(s.rec_url, s.idx_url, s.size, s.version, None, s.path)
                           for s in self.shards]
        state["_pid"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    def filesystem(self, shard_no: int):
        """The fsspec filesystem and path of a shard (re-resolved after unpickling)."""
        s = self.shards[shard_no]
        if self._pid != os.getpid():  # event loops and clients do not survive fork
            self._pid = os.getpid()
            for sh in self.shards:
                sh.fs = None
        if s.fs is None:
            from cloudrec.storage.fs import resolve
            s.fs, s.path = resolve(s.rec_url, self.storage_options)
        return s.fs, s.path

    def __repr__(self) -> str:
        return (f"ShardedDataset({len(self.shards)} shard(s), {len(self)} records, "
                f"{self.nbytes} bytes)")


def open_dataset(urls: UrlArg, idx_urls: Optional[Union[str, Sequence[Optional[str]]]] = None,
                 storage_options: Optional[Dict[str, Any]] = None, *,
                 require_index: bool = True, key_type: Any = None,
                 concurrency: int = 16, retry: Optional[RetryPolicy] = None) -> ShardedDataset:
    """Open a dataset of one or more `.rec` shards.

    ``urls``: one URL, a list, a glob (``s3://b/train-*.rec``) or a brace range
    (``train-{0000..0127}.rec``).  ``idx_urls`` default to the sibling `.idx`
    files.  With ``require_index=False`` a shard without `.idx` is scanned for
    record heads (reads the whole shard once).  ``retry`` governs the
    metadata reads (``info``, `.idx`) as it does record reads.
    """
    rec_urls = expand_urls(urls, storage_options)
    if isinstance(idx_urls, (str, os.PathLike)):
        idx_urls = expand_urls(idx_urls, storage_options) if len(rec_urls) > 1 else [idx_urls]
    shards = stat_shards(rec_urls, idx_urls, storage_options, concurrency, retry)

    def load(i: int) -> RecordTable:
        s = shards[i]
        try:
            data = read_idx_bytes(s, storage_options, retry)
            return table_from_idx(i, data, s.size, idx_url=s.idx_url or "", rec_url=s.rec_url,
                                  key_type=key_type)
        except IndexFileError:  # missing, or empty/stale/malformed for this .rec
            if require_index:
                raise
            return _scan(i, s, retry)

    if len(shards) == 1:
        parts = [load(0)]
    else:
        with ThreadPoolExecutor(min(concurrency, len(shards))) as pool:
            parts = list(pool.map(load, range(len(shards))))
    if key_type is None and any(p.key.dtype == object for p in parts):
        for p in parts:
            if p.key.dtype != object:
                p.key = np.array([str(k) for k in p.key], dtype=object)
    return ShardedDataset(shards, RecordTable.concat(parts), storage_options)


def _scan(shard_no: int, shard: Shard, retry: Optional[RetryPolicy]) -> RecordTable:
    from cloudrec.storage.ranged import make_range_reader
    reader = make_range_reader(shard.fs, concurrency=1, retry=retry)
    try:
        table = table_from_scan(shard_no, lambda a, b: reader.read(shard.path, a, b, shard.rec_url),
                                shard.size)
    finally:
        reader.close()
    if shard.size and (len(table) == 0 or table.offset[0] != 0):
        # bytes but no record head at 0: not RecordIO (or a damaged start); never 0 records
        raise RecordIOError("no RecordIO record starts at offset 0: not a .rec file, or its "
                            "start is damaged", shard.rec_url, 0)
    return table
