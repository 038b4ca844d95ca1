"""Every record checked against the CRC32 its dataset table keeps for it.

A table written with ``cloudrec index --table --crc`` (see
:mod:`cloudrec.dataset.record_crc`) lets a fetcher catch bytes that changed
anywhere between the writer and the model: a ranged GET (S3 sends no checksum
for part of an object), HTTP, HDFS or Azure (none at all), a cache entry of such
a store, or a local disk.  A record that does not match is read once more from
its store, pinned to the shard's version: a byte flipped on the way is then
healed (counted in ``stats["records_reread"]``), and a cache entry it came from
is dropped so the shard is fetched anew.  Bytes that still do not match are a
:class:`~cloudrec.errors.ChecksumMismatchError` naming the shard, the bytes and
the record; never a silently wrong sample.
"""
from __future__ import annotations

import warnings
import zlib
from typing import Any, Dict, Union

import numpy as np

from cloudrec.errors import ChecksumMismatchError
from cloudrec.storage.redact import redact_url

Bytes = Union[bytes, memoryview]


class RecordCheck:
    """The record CRCs of a fetcher's table, and what to do when one does not match."""

    def __init__(self, fetcher: Any) -> None:
        self.f = fetcher
        self.crc: np.ndarray = fetcher.table.crc
        self.reread = 0   # records whose bytes did not match and were read again, healed
        self.pending: Dict[int, str] = {}   # shard -> URL: its download streamed bad bytes

    def verified(self, rid: int, shard_no: int, offset: int, rec: Bytes) -> Bytes:
        """``rec`` (record ``rid``'s bytes at ``offset`` of its shard) if it matches its CRC,
        else the record as read again from the store (or ChecksumMismatchError)."""
        want = int(self.crc[rid])
        got = zlib.crc32(rec)
        if got == want:
            return rec
        return self._again(rid, shard_no, offset, len(rec), want, got)

    def _again(self, rid: int, shard_no: int, offset: int, length: int, want: int,
               got: int) -> Bytes:
        f = self.f
        shard = f.ds.shards[shard_no]
        fs, path = f.ds.filesystem(shard_no)
        entry = self._cache_entry(shard_no)
        data = f._reader_for(fs).submit(path, offset, offset + length, shard.rec_url,
                                        shard.version).result()
        again = zlib.crc32(data)
        if again == want:
            self.reread += 1
            if entry is not None:
                self._drop_entry(shard_no, entry, shard.rec_url)
            else:
                self._drop_when_published(shard_no, shard.rec_url)
            return memoryview(data)
        key = f.table.key[rid]
        raise ChecksumMismatchError(
            f"record id {rid} (key {key.item() if hasattr(key, 'item') else key}) does not "
            f"match the dataset table's CRC32 {want:08x}: read {got:08x}"
            + (" from the cache" if entry is not None else "") + f", then {again:08x} from "
            "the store (the shard's bytes changed without its size and version changing, "
            "or they are damaged; rebuild the table with cloudrec index --table --crc if "
            "the shard was rewritten on purpose)", shard.rec_url, offset, offset + length)

    def _cache_entry(self, shard_no: int) -> Any:
        """The cache entry the shard's records are read from, if any."""
        cache = self.f._cache
        target = self.f._targets.get(shard_no)
        if cache is None or target is None or cache._local is None or target[0] is not cache._local:
            return None
        return target[1]

    def _drop_when_published(self, shard_no: int, url: str) -> None:
        """The bad bytes came from a cache download still running (streamed): drop the
        entry it publishes, at the fetcher's next :meth:`settle`."""
        if self.f._cache is not None:
            self.pending[shard_no] = url

    def settle(self, wait: bool = False) -> None:
        """Drop the entries that downloads with bad bytes published since (called by the
        fetcher where a fetch starts and ends, and on close, where ``wait`` lets such a
        download finish first: rare, it follows a mismatch)."""
        cache = self.f._cache
        for shard_no, url in list(self.pending.items()):
            fut = cache._paths.get(shard_no) if cache is not None else None
            if wait and fut is not None:
                try:
                    fut.result(timeout=60)
                except BaseException:  # noqa: BLE001 - its reads report their own errors
                    pass
            if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
                del self.pending[shard_no]   # nothing was published
            elif fut.done():
                del self.pending[shard_no]
                reader, path, _ = fut.result()
                if reader is cache._local:
                    self._drop_entry(shard_no, path, url)

    def _drop_entry(self, shard_no: int, entry: str, url: str) -> None:
        """A cache entry held bytes that do not match the table: remove it, and let this
        fetcher download the shard anew on its next request."""
        cache = self.f._cache
        cache.cache.discard(entry)
        cache.forget(shard_no, entry)
        self.f._targets.pop(shard_no, None)
        warnings.warn(f"cloudrec cache: entry {entry} held a record that does not match the "
                      f"dataset table's CRC32; dropped, the shard will be fetched again "
                      f"({redact_url(url)})", RuntimeWarning, stacklevel=4)
