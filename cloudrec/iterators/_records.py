"""The one seam between ImageRecordIter and the reader layer.

Opens the dataset (``cloudrec.dataset.open_dataset``), puts its records in
MXNet's file order (sorted offsets, `.idx` keys ignored) and fetches payloads
through ``cloudrec.reader.fetch.RecordFetcher``.  Partitions and orders are
the sampler's (:class:`cloudrec.reader.sampler.EpochSampler`).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from cloudrec.errors import ConfigError, RecordIOError
from cloudrec.format.framing import MAGIC, ceil4

__all__ = ["RecordSource"]


def _split_urls(v: Any) -> List[str]:
    """path_imgrec may be one URL, a list, or MXNet's ';'-separated string."""
    if isinstance(v, (list, tuple)):
        return [os.fspath(x) for x in v]
    v = os.fspath(v)
    return [s for s in v.split(";") if s] if ";" in v else [v]


class RecordSource:
    """Records of ``path_imgrec`` in MXNet's file order, partitioned like MXNet."""

    def __init__(self, path_imgrec: Any, path_imgidx: Any = "",
                 storage_options: Optional[Dict[str, Any]] = None, cache: str = "none",
                 fetch_options: Any = None, partial_index: bool = False) -> None:
        from cloudrec.dataset import open_dataset
        from cloudrec.reader.fetch import RecordFetcher

        from cloudrec.options import FetchOptions

        urls = _split_urls(path_imgrec)
        # a dict of RecordFetcher keywords (its "cache" too) or a FetchOptions; the
        # defaults are the backend's (cloudrec.options.FETCH_DEFAULTS), as everywhere
        self.fetch_options = FetchOptions.coerce(fetch_options, cache=cache)
        opts = self.fetch_options.fetcher_kwargs(urls)
        retry = opts["retry"]  # the same policy for the .idx/stat requests
        self.indexed = bool(path_imgidx)
        # fetch_options["table"]: the .idx facts from a dataset table (one GET; record CRCs)
        fo = self.fetch_options
        table = {"table": fo.table, "table_stale": fo.table_stale} if fo.table else {}
        if self.indexed:
            idx = _split_urls(path_imgidx)
            if len(idx) != len(urls):
                raise ConfigError(f"{len(urls)} .rec files but {len(idx)} .idx files "
                                  "(give one .idx per .rec)")
            self.ds = open_dataset(urls, idx, storage_options, retry=retry, **table)
        else:
            # MXNet reads sequentially and splits by bytes; the sibling .idx, when it
            # exists, only saves cloudrec a scan for record heads.
            self.ds = open_dataset(urls, None, storage_options, require_index=False,
                                   retry=retry, **table)
        t = self.ds.table
        # MXNet's C++ reader: offsets sorted, keys ignored -> file order
        self.file_order = np.lexsort((t.offset, t.shard)).astype(np.int64)
        self._check_unique_offsets()
        # partial_index: an .idx may list a subset of the records (MXNet's ImageIter)
        self.fetcher = RecordFetcher(self.ds, partial_index=partial_index, **opts)

    def _check_unique_offsets(self) -> None:
        t = self.ds.table
        if len(t) < 2:
            return
        fo = self.file_order
        same = (t.shard[fo][1:] == t.shard[fo][:-1]) & (t.offset[fo][1:] == t.offset[fo][:-1])
        if same.any():
            rid = int(fo[1:][np.flatnonzero(same)[0]])
            raise RecordIOError("the .idx lists the same offset twice",
                                self.ds.record_url(rid), int(t.offset[rid]), t.key[rid])

    def __len__(self) -> int:
        return len(self.ds)

    def describe(self, rid: int) -> str:
        """``url, key K, offset O`` of a record, for error messages."""
        t, rid = self.ds.table, int(rid)
        key = t.key[rid]
        key = key.item() if hasattr(key, "item") else key
        return f"{self.ds.record_url(rid)}, key {key!r}, offset {int(t.offset[rid])}"

    def fetch(self, ids: Iterable[int], **hints: Any) -> Iterator[Tuple[int, bytes]]:
        """(record id, payload) in the order asked; an .idx span that holds more than
        one record raises (MXNet would silently read the unlisted records too).
        ``hints``: an EpochSlice's ``chunk_starts``/``exclusive`` (RecordFetcher.fetch)."""
        length = self.ds.table.length
        for rid, payload in self.fetcher.fetch(ids, **hints):
            span = int(length[rid])
            if span != 8 + ceil4(len(payload)):
                _check_span(payload, span, self.ds, rid)
            yield rid, payload

    def close(self) -> None:
        self.fetcher.close()


def _check_span(payload: bytes, span: int, ds: Any, rid: int) -> None:
    """Raise when ``span`` bytes hold more than the one record decoded from them."""
    n4 = len(payload) // 4
    words = np.frombuffer(payload, dtype="<u4", count=n4)
    # every 4-byte aligned magic inside the payload became a part boundary on disk
    cuts = np.flatnonzero(words == MAGIC)
    nparts = int(cuts.size) + 1
    # parts lose their magic (4 bytes) but gain an 8-byte header, each padded to 4
    bounds = [0] + [int(c) * 4 for c in cuts] + [len(payload)]
    encoded = 0
    for i in range(nparts):
        a = bounds[i] + (4 if i else 0)
        encoded += 8 + ceil4(bounds[i + 1] - a)
    if span > encoded:
        t = ds.table
        raise RecordIOError(
            f"record id {rid} spans {span} bytes by the .idx but its record takes "
            f"{encoded}: the .idx does not list every record of the .rec (MXNet's "
            "ImageRecordIter silently read the unlisted ones; rebuild the index)",
            ds.record_url(rid), int(t.offset[rid]), t.key[rid])
