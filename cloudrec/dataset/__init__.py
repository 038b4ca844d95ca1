"""Dataset layer: a list of `.rec` shards and one global record table.

``open_dataset("s3://b/train-{0000..0127}.rec")`` expands the URLs, stats
every shard and reads every `.idx` concurrently, and returns a
:class:`ShardedDataset` whose ``table`` maps a global record id to
(shard, key, offset, length).  It reads no record bytes.
"""
from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from cloudrec.dataset.manifest import (IncompletePackError, check_packs_after_open,
                                       check_packs_before_open)
from cloudrec.dataset.shards import (IndexNotFoundError, Shard, expand_braces, expand_urls,
                                     read_idx_url, sibling_idx, stat_shards)
from cloudrec.dataset.table import RecordTable, table_from_idx, table_from_scan
from cloudrec.errors import ConfigError, IndexFileError, RecordIOError
from cloudrec.storage.retry import RetryPolicy

__all__ = ["open_dataset", "ShardedDataset", "Shard", "RecordTable", "expand_urls",
           "expand_braces", "sibling_idx", "IncompletePackError", "IndexMismatchWarning",
           "IndexNotFoundError"]

UrlArg = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


class ShardedDataset:
    """Shards plus the global record table; record id ``i`` is row ``i`` of ``table``.

    Records are numbered shard by shard, in each `.idx`'s line order.
    """

    def __init__(self, shards: List[Shard], table: RecordTable,
                 storage_options: Optional[Dict[str, Any]] = None,
                 shard_starts: Optional[np.ndarray] = None) -> None:
        self.shards = shards
        self.table = table
        self.storage_options = dict(storage_options or {})
        starts = np.zeros(len(shards) + 1, np.int64)
        if shard_starts is not None:  # known (a dataset table): no pass over table.shard
            starts = np.asarray(shard_starts, np.int64)
        elif len(table):
            np.cumsum(np.bincount(table.shard, minlength=len(shards)), out=starts[1:])
        self.shard_starts = starts  # first record id of each shard
        self._pid = os.getpid()
        self.open_seconds: Dict[str, float] = {}  # set by open_dataset: fetch/parse/total

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


INDEX_MISMATCH = ("error", "scan")


def open_dataset(urls: UrlArg, idx_urls: Optional[Union[str, Sequence[Optional[str]]]] = None,
                 storage_options: Optional[Dict[str, Any]] = None, *,
                 require_index: bool = True, key_type: Any = None,
                 concurrency: int = 16, retry: Optional[RetryPolicy] = None,
                 on_index_mismatch: str = "error", table: Optional[str] = None,
                 table_stale: str = "rebuild") -> ShardedDataset:
    """Open a dataset of one or more `.rec` shards.

    ``urls``: one URL, a list, a glob (``s3://b/train-*.rec``) or a brace range
    (``train-{0000..0127}.rec``).  ``idx_urls`` default to the sibling `.idx`
    files.  With ``require_index=False`` a shard *without* `.idx` is scanned
    for record heads (reads the whole shard once).

    An `.idx` that exists is authoritative: one that cannot describe its
    `.rec` (offsets at or past its end, the same offset twice, no record at
    offset 0, empty next to a non-empty `.rec`, unparsable) raises
    IndexFileError naming both files, whatever ``require_index`` says.
    ``on_index_mismatch="scan"`` instead warns (IndexMismatchWarning) and
    scans that shard, as MXNet's sequential reader would.

    A glob or brace range over im2rec shards (``BASE-IIIII-of-NNNNN.rec``) is
    checked against the pack manifest (``BASE.manifest.json``): an incomplete
    pack raises IncompletePackError naming what is missing.  The `.idx` files
    are fetched concurrently (``concurrency`` threads) together with the
    shards' sizes; ``ds.open_seconds`` says how long opening took.
    ``retry`` governs these metadata reads as it does record reads.
    ``table``: a dataset table (``cloudrec index --table``) to open from instead
    of every `.idx`; ``table_stale`` says what a table older than its shards does
    (see :mod:`cloudrec.dataset.table_file`).
    """
    if table is not None:  # the compact dataset table (cloudrec.dataset.table_file)
        from cloudrec.dataset.table_file import open_with_table
        return open_with_table(table, urls, storage_options, table_stale, idx_urls=idx_urls,
                               require_index=require_index, key_type=key_type,
                               concurrency=concurrency, retry=retry,
                               on_index_mismatch=on_index_mismatch)
    if on_index_mismatch not in INDEX_MISMATCH:
        raise ConfigError(f"on_index_mismatch must be one of {INDEX_MISMATCH}, "
                          f"got {on_index_mismatch!r}")
    t0 = time.perf_counter()
    patterns = _glob_patterns(urls)
    rec_urls = expand_urls(urls, storage_options)
    if isinstance(idx_urls, (str, os.PathLike)):
        idx_urls = expand_urls(idx_urls, storage_options) if len(rec_urls) > 1 else [idx_urls]
    if idx_urls is None:
        idx_list: List[Optional[str]] = [sibling_idx(u) for u in rec_urls]
    else:
        idx_list = [os.fspath(i) if i is not None else None for i in idx_urls]
    if len(idx_list) != len(rec_urls):
        raise ConfigError(f"{len(rec_urls)} shards but {len(idx_list)} index URLs")
    groups = (check_packs_before_open(rec_urls, patterns, storage_options, retry)
              if patterns is not None else [])
    workers = max(1, min(int(concurrency), 2 * len(rec_urls)))

    def fetch_idx(i: int) -> Union[bytes, IndexFileError]:
        try:
            return read_idx_url(idx_list[i], rec_urls[i], storage_options, retry)
        except IndexFileError as exc:  # judged once the shard's size is known
            return exc

    with ThreadPoolExecutor(workers) as pool:  # sizes and .idx bytes at once
        idx_futures = [pool.submit(fetch_idx, i) for i in range(len(rec_urls))]
        shards = stat_shards(rec_urls, idx_list, storage_options, concurrency, retry,
                             pool=pool)
        idx_data = [f.result() for f in idx_futures]
    t_fetch = time.perf_counter()

    def load(i: int) -> RecordTable:
        s, data = shards[i], idx_data[i]
        try:
            if isinstance(data, IndexFileError):
                raise data
            return table_from_idx(i, data, s.size, idx_url=s.idx_url or "", rec_url=s.rec_url,
                                  key_type=key_type)
        except IndexNotFoundError:
            if require_index:
                raise
            return _scan(i, s, retry)
        except IndexFileError as exc:
            if on_index_mismatch == "error":
                msg = exc.message if s.rec_url in exc.message else \
                    f"{exc.message}; the index of {s.rec_url}"
                if not require_index:  # say how to read it anyway
                    msg += ("; the .idx is authoritative when it exists: fix or rebuild it "
                            "(cloudrec index --force), delete it, or pass "
                            "on_index_mismatch='scan'")
                if msg == exc.message:
                    raise
                raise IndexFileError(msg, exc.url, line=exc.line, key=exc.key,
                                     offset=exc.offset) from None
            warnings.warn(IndexMismatchWarning(
                f"{exc}; scanning {s.rec_url} for its records instead"), stacklevel=3)
            return _scan(i, s, retry)

    if len(shards) == 1:
        parts = [load(0)]
    else:  # a shard without .idx is scanned: those reads overlap too
        with ThreadPoolExecutor(min(concurrency, len(shards))) as pool:
            parts = list(pool.map(load, range(len(shards))))
    if key_type is None and any(p.key.dtype == object for p in parts):
        for p in parts:
            if p.key.dtype != object:
                p.key = np.array([str(k) for k in p.key], dtype=object)
    if groups:
        check_packs_after_open(groups, {s.rec_url: s.size for s in shards},
                               {s.rec_url: len(p) for s, p in zip(shards, parts)})
    ds = ShardedDataset(shards, RecordTable.concat(parts), storage_options)
    t1 = time.perf_counter()
    ds.open_seconds = {"fetch": t_fetch - t0, "parse": t1 - t_fetch, "total": t1 - t0}
    return ds


class IndexMismatchWarning(UserWarning):
    """An `.idx` disagreed with its `.rec` and ``on_index_mismatch='scan'`` scanned instead."""


def _glob_patterns(urls: UrlArg) -> Optional[List[str]]:
    """The user's glob patterns after brace expansion; None when no glob or brace was used."""
    items = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    used = False
    patterns: List[str] = []
    for u in items:
        u = os.fspath(u)
        expanded = expand_braces(u)
        used = used or len(expanded) > 1 or expanded[0] != u
        for v in expanded:
            if any(c in v.split("://", 1)[-1] for c in "*?["):
                patterns.append(v)
                used = True
    return patterns if used else None


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
