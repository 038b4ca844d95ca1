"""The compact dataset table: one binary file of (shard, key, offset, length) for every record.

Opening a dataset of 1,000 shards means 1,000 `.idx` GETs and parsing ~100
bytes of text per record in every rank; at 100 M records that is minutes and
gigabytes per process.  ``cloudrec index --table OUT SHARDS`` writes the same
facts once, as little-endian columns a process memory-maps:

    header (64 B): magic ``CRTABLE1``, version, records, shards, meta offset/length
    meta (JSON):   per shard rec/idx URL, size and version (ETag or mtime), the
                   columns' offsets and a CRC32 of the column bytes
    columns:       shard int32, key int64, offset int64, length int64 (64-B aligned),
                   and with ``--crc`` (header flag 1) crc uint32: ``zlib.crc32`` of each
                   record's bytes (:mod:`cloudrec.dataset.record_crc`), checked on every read;
                   the meta's ``crc32`` covers the first four columns only, so a reader
                   that knows no ``crc`` column maps such a table as before

``open_dataset(urls, table=URL)`` copies a remote table once per node into
the local cache folder (a few concurrent ranged GETs, under a file lock, CRC
checked, renamed into place) and maps it; the processes of a node share its
pages.  The `.idx` files stay the source of truth: every open lists the shards'
folders (one LIST per 1,000 objects) and compares each `.rec`'s and `.idx`'s
size and version with the table's; any change falls back to reading the
`.idx` files (``table_stale="rebuild"``, with a warning) or raises
IndexFileError (``table_stale="error"``).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.dataset.shards import Shard, _version, expand_urls, sibling_idx
from cloudrec.dataset.table import RecordTable
from cloudrec.errors import ConfigError, IndexFileError, StorageError
from cloudrec.storage.fs import resolve

MAGIC = b"CRTABLE1"
VERSION = 1
HEADER = struct.Struct("<8sIIQQQQ")      # magic, version, flags, records, shards, meta off, len
HEADER_BYTES = 64
ALIGN = 64
COLUMNS = (("shard", "<i4"), ("key", "<i8"), ("offset", "<i8"), ("length", "<i8"))
CRC_COLUMN = ("crc", "<u4")
FLAG_CRC = 1                             # header flag: the table has the crc column
TABLE_GET_BYTES = 64 << 20               # one ranged GET of a remote table
STALE_MODES = ("rebuild", "error")


class TableStaleWarning(UserWarning):
    """A dataset table no longer matches its shards; the `.idx` files were read instead."""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def table_nbytes(records: int, shards: int, crc: bool = False) -> int:
    """About how large the table of ``records`` records in ``shards`` shards is."""
    return HEADER_BYTES + _align(300 * shards + 400) + sum(
        _align(records * np.dtype(d).itemsize) for _, d in COLUMNS + ((CRC_COLUMN,) if crc else ()))


@dataclass
class TableFile:
    """A mapped table: ``table`` (memory-mapped columns), ``shards`` and per-shard facts."""

    path: str
    table: RecordTable
    shards: List[Shard]
    idx_sizes: List[int]
    idx_versions: List[str]
    meta: Dict[str, Any]


# ----- writing ----------------------------------------------------------------------------
def _folder_of(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def list_folders(urls: Sequence[str], storage_options: Optional[Dict[str, Any]]
                 ) -> Dict[str, Dict[str, Dict]]:
    """The entries of every folder holding one of ``urls``, by folder then object name:
    one LIST per folder page (a folder that is not there lists as empty)."""
    firsts: Dict[str, str] = {}
    for u in urls:
        firsts.setdefault(_folder_of(u), u)
    out: Dict[str, Dict[str, Dict]] = {}
    for folder, member in firsts.items():
        fs, path = resolve(member, storage_options)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        try:
            entries = fs.ls(parent or ".", detail=True, **({"refresh": True} if _is_s3(fs) else {}))
        except FileNotFoundError:
            entries = []
        except OSError as exc:
            raise StorageError(f"cannot list the dataset folder: {exc}", folder) from exc
        out[folder] = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in entries}
    return out


def _listing(urls: Sequence[str], storage_options: Optional[Dict[str, Any]],
             listed: Optional[Dict[str, Dict[str, Dict]]] = None) -> Dict[str, Dict]:
    """``info`` of every object in the folders of ``urls``, by URL; ``listed``: folders
    listed already (:func:`list_folders`), not listed again."""
    folders = dict(listed or {})
    missing = [u for u in urls if _folder_of(u) not in folders]
    if missing:
        folders.update(list_folders(missing, storage_options))
    out: Dict[str, Dict] = {}
    for u in urls:
        e = folders[_folder_of(u)].get(u.rsplit("/", 1)[-1])
        if e is not None:
            out[u] = e
    return out


def _on_local_disk(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem
    return isinstance(fs, LocalFileSystem)


def _is_s3(fs: Any) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def table_parts(table: RecordTable, shard_facts: List[Dict[str, Any]]) -> List[memoryview]:
    """The table file as a list of byte views (header, meta, columns); no big copy."""
    if table.key.dtype == object:
        raise IndexFileError("string keys cannot go in a dataset table; open the .idx files "
                             "instead", shard_facts[0]["idx"] if shard_facts else None)
    cols = [np.ascontiguousarray(getattr(table, name), dtype=d) for name, d in COLUMNS]
    crc = 0
    for c in cols:
        crc = zlib.crc32(memoryview(c).cast("B"), crc)
    names = list(COLUMNS)
    extra: Dict[str, Any] = {}
    if table.crc is not None:
        if len(table.crc) != len(table):
            raise ValueError(f"{len(table.crc)} record CRCs for {len(table)} records")
        cols.append(np.ascontiguousarray(table.crc, dtype=CRC_COLUMN[1]))
        names.append(CRC_COLUMN)
        extra["crc32_crc"] = zlib.crc32(memoryview(cols[-1]).cast("B"))
    layout, pos = {}, 0
    for (name, d), c in zip(names, cols):
        layout[name] = [pos, d]
        pos += _align(c.nbytes)
    counts = np.bincount(table.shard, minlength=len(shard_facts)) if len(table) else \
        np.zeros(len(shard_facts), np.int64)
    meta = {"shards": shard_facts, "columns": layout, "crc32": crc, "created": time.time(),
            "shard_records": counts.tolist(), **extra}
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    meta_len = _align(len(meta_bytes))
    header = HEADER.pack(MAGIC, VERSION, FLAG_CRC if table.crc is not None else 0, len(table),
                         len(shard_facts), HEADER_BYTES, len(meta_bytes))
    parts = [memoryview(header.ljust(HEADER_BYTES, b"\0")),
             memoryview(meta_bytes.ljust(meta_len, b"\0"))]
    for c in cols:
        parts.append(memoryview(c).cast("B"))
        parts.append(memoryview(b"\0" * (_align(c.nbytes) - c.nbytes)))
    return parts


def shard_facts(ds: Any, listing: Dict[str, Dict]) -> List[Dict[str, Any]]:
    """Per shard: rec/idx URL, size and version (the `.idx` facts from ``listing``)."""
    out = []
    for s in ds.shards:
        info = listing.get(s.idx_url or "", {})
        out.append({"rec": s.rec_url, "idx": s.idx_url, "rec_size": int(s.size),
                    "rec_version": s.version, "idx_size": int(info.get("size", -1)),
                    "idx_version": _version(info) if info else ""})
    return out


def write_table(urls: Any, out: str, storage_options: Optional[Dict[str, Any]] = None,
                crc: bool = False, progress: Optional[bool] = None) -> TableFile:
    """``cloudrec index --table``: open the dataset (reading every `.idx`) and write its table
    to ``out`` (a path or URL), atomically; returns the table as read back from ``out``.

    ``crc``: also read every shard once and store each record's CRC32, which every
    later read checks (:mod:`cloudrec.dataset.record_crc`; ``progress`` shows a bar)."""
    from cloudrec.dataset import open_dataset
    rec_urls = expand_urls(urls, storage_options)
    before = _listing([sibling_idx(u) for u in rec_urls], storage_options)
    ds = open_dataset(rec_urls, storage_options=storage_options)
    table = ds.table
    if crc:
        from cloudrec.dataset.record_crc import record_crcs
        table = dataclasses.replace(table, crc=record_crcs(ds, progress))
    write_table_parts(out, table_parts(table, shard_facts(ds, before)), storage_options)
    return read_table_file(out, storage_options)


def write_table_parts(url: str, parts: List[memoryview],
                      storage_options: Optional[Dict[str, Any]] = None) -> None:
    """A local file via a temporary name and rename; an object store's PUT is atomic."""
    fs, path = resolve(url, storage_options)
    try:
        if _on_local_disk(fs):
            tmp = f"{path}.tmp.{os.getpid()}"
            with open(tmp, "wb") as fh:
                for part in parts:
                    fh.write(part)
            os.replace(tmp, path)
        else:
            fs.pipe_file(path, b"".join(parts))
    except OSError as exc:
        raise StorageError(f"cannot write the dataset table: {exc}", url) from exc


# ----- reading ----------------------------------------------------------------------------
def _cache_dir() -> str:
    from cloudrec.storage.cache import default_cache_dir
    return os.path.join(default_cache_dir(), "tables")


def local_copy(url: str, storage_options: Optional[Dict[str, Any]] = None,
               cache_dir: Optional[str] = None) -> str:
    """A local path of the table at ``url``: itself when local, else a node-shared copy
    (downloaded once, under a lock, CRC-checked; a changed remote table is fetched anew)."""
    fs, path = resolve(url, storage_options)
    if _on_local_disk(fs):
        return path
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise IndexFileError("dataset table not found", url) from exc
    size = int(info["size"])
    key = hashlib.sha256(f"{url}|{size}|{_version(info)}".encode()).hexdigest()[:24]
    folder = cache_dir or _cache_dir()
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, key + ".crtable")
    if os.path.exists(dest):
        return dest
    with open(dest + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(dest):            # another process of the node got it first
            return dest
        tmp = f"{dest}.tmp.{os.getpid()}"
        chunks = [(a, min(size, a + TABLE_GET_BYTES)) for a in range(0, size, TABLE_GET_BYTES)]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with ThreadPoolExecutor(min(8, max(1, len(chunks)))) as pool:
                got = pool.map(lambda c: fs.cat_file(path, start=c[0], end=c[1]), chunks)
                for (a, b), data in zip(chunks, got):
                    if len(data) != b - a:
                        raise StorageError(f"short read of the dataset table ({len(data)} of "
                                           f"{b - a} bytes)", url, a, b)
                    os.pwrite(fd, data, a)
        finally:
            os.close(fd)
        try:
            _map(tmp, url, check_crc=True)
        except BaseException:
            os.unlink(tmp)
            raise
        os.replace(tmp, dest)
    return dest


def _map(path: str, url: str, check_crc: bool = False) -> Tuple[Dict[str, Any], RecordTable, int]:
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES or head[:8] != MAGIC:
            raise IndexFileError("not a cloudrec dataset table (bad magic)", url)
        _, version, flags, n, nshards, moff, mlen = HEADER.unpack(head[:HEADER.size])
        if version != VERSION:
            raise IndexFileError(f"dataset table version {version}, this cloudrec reads "
                                 f"{VERSION}; rebuild it (cloudrec index --table)", url)
        fh.seek(moff)
        try:
            meta = json.loads(fh.read(mlen))
        except ValueError as exc:
            raise IndexFileError(f"dataset table metadata unreadable: {exc}", url) from None
    base = moff + _align(mlen)
    size = os.path.getsize(path)
    cols = {}
    names = COLUMNS + ((CRC_COLUMN,) if flags & FLAG_CRC else ())
    for name, d in names:
        if name not in meta["columns"]:
            raise IndexFileError(f"dataset table metadata lists no {name} column", url)
        off, dtype = meta["columns"][name]
        nbytes = n * np.dtype(dtype).itemsize
        if base + off + nbytes > size:
            raise IndexFileError(f"dataset table truncated ({size} bytes, column {name} "
                                 f"needs {base + off + nbytes})", url)
        cols[name] = np.memmap(path, dtype=dtype, mode="r", offset=base + off, shape=(n,)) \
            if n else np.zeros(0, dtype)
    if len(meta["shards"]) != nshards:
        raise IndexFileError("dataset table metadata lists the wrong number of shards", url)
    if check_crc:
        crc = 0
        for name, _ in COLUMNS:
            crc = zlib.crc32(memoryview(np.ascontiguousarray(cols[name])).cast("B"), crc)
        if crc != meta["crc32"] or ("crc" in cols and zlib.crc32(memoryview(
                np.ascontiguousarray(cols["crc"])).cast("B")) != meta.get("crc32_crc")):
            raise IndexFileError("dataset table damaged (CRC32 mismatch)", url)
    return meta, RecordTable(cols["shard"], cols["key"], cols["offset"], cols["length"],
                             cols.get("crc")), nshards


def read_table_file(url: str, storage_options: Optional[Dict[str, Any]] = None,
                    cache_dir: Optional[str] = None) -> TableFile:
    """Map the table at ``url`` (copied once per node when remote); no freshness check."""
    path = local_copy(url, storage_options, cache_dir)
    meta, table, _ = _map(path, url)
    shards = [Shard(s["rec"], s["idx"], int(s["rec_size"]), s["rec_version"])
              for s in meta["shards"]]
    return TableFile(path, table, shards, [int(s["idx_size"]) for s in meta["shards"]],
                     [s["idx_version"] for s in meta["shards"]], meta)


def stale_shards(tf: TableFile, storage_options: Optional[Dict[str, Any]] = None,
                 listed: Optional[Dict[str, Dict[str, Dict]]] = None) -> List[str]:
    """What changed since the table was written (``.rec``/``.idx`` size or version), by listing.

    ``listed``: folders listed already (:func:`list_folders`) after the table was written."""
    urls = [u for s in tf.shards for u in (s.rec_url, s.idx_url) if u]
    listing = _listing(urls, storage_options, listed)
    why = []
    for s, isz, iver in zip(tf.shards, tf.idx_sizes, tf.idx_versions):
        for url, size, ver in ((s.rec_url, s.size, s.version), (s.idx_url, isz, iver)):
            info = listing.get(url or "")
            if info is None:
                why.append(f"{url} is gone")
            elif int(info.get("size", -1)) != size or _version(info) != ver:
                why.append(f"{url} changed (size {size} -> {info.get('size')})")
    return why


def open_with_table(table: str, urls: Any, storage_options: Optional[Dict[str, Any]] = None,
                    table_stale: str = "rebuild", **open_kw: Any):
    """``open_dataset(urls, table=...)``: the dataset from its table, checked against a listing."""
    from cloudrec.dataset import ShardedDataset, open_dataset
    if table_stale not in STALE_MODES:
        raise ConfigError(f"table_stale must be one of {STALE_MODES}, got {table_stale!r}")
    t0 = time.perf_counter()
    want = expand_urls(urls, storage_options) if urls is not None else None
    with ThreadPoolExecutor(1) as pool:
        # the shards' folders are listed while the table is fetched: two round trips at
        # once instead of one after the other.  A listing older than the table can only
        # make it look stale (the .idx files are read then), never fresh by mistake.
        early = pool.submit(list_folders, want, storage_options) if want else None
        tf = read_table_file(table, storage_options)
    if want is not None:
        if want != [s.rec_url for s in tf.shards]:
            raise ConfigError(f"dataset table {table} is for other shards ({len(tf.shards)} "
                              f"from {tf.shards[0].rec_url if tf.shards else '-'}); "
                              f"rebuild it for these {len(want)}")
    idx_urls = open_kw.get("idx_urls")
    if idx_urls is not None:
        given = [idx_urls] if isinstance(idx_urls, (str, os.PathLike)) else list(idx_urls)
        if [os.fspath(u) if u is not None else None for u in given] != [s.idx_url for s in tf.shards]:
            raise ConfigError(f"dataset table {table} was built from other .idx files "
                              f"({tf.shards[0].idx_url if tf.shards else '-'}, ...) than the "
                              f"ones given ({given[0] if given else '-'}, ...)")
    why = stale_shards(tf, storage_options, early.result() if early is not None else None)
    if why:
        msg = (f"dataset table {table} is stale: {why[0]}" + (f" (+{len(why) - 1} more)"
               if len(why) > 1 else "") + "; rebuild it with cloudrec index --table")
        if table_stale == "error":
            raise IndexFileError(msg, table)
        warnings.warn(msg + "; reading the .idx files instead", TableStaleWarning, stacklevel=3)
        return open_dataset(urls if urls is not None else [s.rec_url for s in tf.shards],
                            storage_options=storage_options, **open_kw)
    # filesystems resolve lazily (ShardedDataset.filesystem), not 1,000 times here
    shards = [Shard(s.rec_url, s.idx_url, s.size, s.version) for s in tf.shards]
    counts = np.asarray(tf.meta["shard_records"], np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    ds = ShardedDataset(shards, tf.table, storage_options, shard_starts=starts)
    ds.open_seconds = {"total": time.perf_counter() - t0}
    return ds
