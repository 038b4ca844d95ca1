"""Packing images into `.rec`/`.idx` shards: parallel, ordered, atomic.

A pool of workers (threads by default: cv2 and file reads release the GIL;
or processes) reads and encodes images; the writer takes results back in
list order, so the output never depends on timing.  Records go to
temporary names that are renamed only when every shard is complete, and a
sharded pack's manifest (``BASE.manifest.json``) is written last, so a
failed or interrupted run never leaves files that open as finished.
"""
from __future__ import annotations

import bisect
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from cloudrec.errors import ConfigError, StorageError
from cloudrec.format.framing import encoded_length
from cloudrec.format.lst import ListEntry
from cloudrec.recordio import MXIndexedRecordIO
from cloudrec.storage.fs import join_url
# payloads, the pool and publication have their own modules; their names stay importable here
from cloudrec.tools.encode_pool import (Encoded, ImageSource, encode_batch,  # noqa: F401
                                        encode_one, iter_encoded)
from cloudrec.tools.payload import (CHECKS, EncodeOptions, PackError,  # noqa: F401
                                    build_payload, make_header, sniff_image, transform_image)
from cloudrec.tools.publish import (commit_pack, commit_shards, remove_temps,  # noqa: F401
                                    replace_file, write_bytes_atomic)

ON_ERROR = ("fail", "skip")


# -- writing shards under temporary names ----------------------------------------------------------

def shard_name(base: str, index: Optional[int], count: Optional[int]) -> str:
    """``base`` or ``base-00003-of-00008`` (file names without extension)."""
    return base if index is None else "%s-%05d-of-%05d" % (base, index, count)


def shard_bounds(n: int, num_shards: int) -> List[int]:
    """Start position of each of ``num_shards`` near-equal contiguous shards of ``n`` items."""
    return [i * n // num_shards for i in range(num_shards)]


@dataclass
class ShardFile:
    """One shard being written: temporary and final URLs, counts."""

    tmp_rec: str
    tmp_idx: str
    index: int
    records: int = 0
    nbytes: int = 0
    final_rec: str = ""
    final_idx: str = ""


def _tmp_url(dir_url: str, name: str) -> str:
    return join_url(dir_url, ".%s.tmp-%s" % (name, uuid.uuid4().hex[:10]))


class ShardedWriter:
    """Writes records to one file or to shards, under temporary names until ``commit``.

    Fixed sharding (``num_shards``) puts list position ``pos`` into the shard
    whose range holds it; size sharding (``shard_size``) starts a new shard
    when the next record would overflow the current one.  With ``shard_index``
    the writer produces just that one shard of ``num_shards`` (Dask tasks).
    """

    def __init__(self, dir_url: str, base: str, storage_options: Optional[Dict[str, Any]] = None,
                 *, total: int = 0, num_shards: Optional[int] = None,
                 shard_size: Optional[int] = None, shard_index: Optional[int] = None) -> None:
        if num_shards is not None and shard_size is not None:
            raise ConfigError("give --num-shards or --shard-size, not both")
        if num_shards is not None and num_shards < 1:
            raise ConfigError(f"--num-shards must be >= 1, got {num_shards}")
        if shard_size is not None and shard_size < 1:
            raise ConfigError(f"--shard-size must be >= 1 byte, got {shard_size}")
        if num_shards and shard_index is None and total and num_shards > total:
            raise ConfigError(f"--num-shards {num_shards} is more than the {total} images")
        self.dir_url, self.base = dir_url, base
        self.storage_options = dict(storage_options or {})
        self.num_shards, self.shard_size = num_shards, shard_size
        self.shard_index = shard_index
        self.sharded = num_shards is not None or shard_size is not None
        self._starts = shard_bounds(total, num_shards) if num_shards else [0]
        self.shards: List[ShardFile] = []
        self._cur: Optional[MXIndexedRecordIO] = None
        self._cur_shard: Optional[ShardFile] = None
        self._done = False

    # the shard a record at list position ``pos`` belongs to, before it is written
    def _target(self, pos: int, length: int) -> int:
        if self.shard_index is not None:
            return self.shard_index
        if self.num_shards:
            return bisect.bisect_right(self._starts, pos) - 1
        if self.shard_size and self._cur_shard is not None and self._cur_shard.records \
                and self._cur_shard.nbytes + length > self.shard_size:
            return self._cur_shard.index + 1
        return self._cur_shard.index if self._cur_shard is not None else 0

    def _open(self, index: int) -> None:
        self._close_current()
        name = shard_name(self.base, index if self.sharded else None, 0)
        sf = ShardFile(_tmp_url(self.dir_url, name + ".rec"),
                       _tmp_url(self.dir_url, name + ".idx"), index)
        self.shards.append(sf)
        self._cur_shard = sf
        try:
            self._cur = MXIndexedRecordIO(sf.tmp_idx, sf.tmp_rec, "w",
                                          storage_options=self.storage_options)
        except StorageError:  # already names the file
            raise
        except Exception as exc:  # OSError, botocore errors, ...
            raise StorageError(f"cannot create output: {type(exc).__name__}: {exc}",
                               sf.tmp_rec) from exc

    def _close_current(self) -> None:
        if self._cur is not None:
            self._cur.close()
            self._cur = None

    def write(self, pos: int, key: int, payload: bytes) -> int:
        """Append one record (``pos`` = list position, ``key`` = its `.idx` key); bytes written."""
        target = self._target(pos, encoded_length(len(payload)))
        if self._cur_shard is None:
            self._open(self.shard_index if self.shard_index is not None else 0)
        while self._cur_shard.index < target:
            self._open(self._cur_shard.index + 1)
        before = self._cur.tell()
        self._cur.write_idx(key, payload)
        self._cur_shard.records += 1
        self._cur_shard.nbytes = self._cur.tell()
        return self._cur_shard.nbytes - before

    def finish(self) -> List[ShardFile]:
        """Close every shard (still under temporary names) and fill in final names."""
        if self._cur_shard is None:
            self._open(self.shard_index if self.shard_index is not None else 0)
        if self.num_shards and self.shard_index is None:  # trailing empty shards still exist
            while self._cur_shard.index < self.num_shards - 1:
                self._open(self._cur_shard.index + 1)
        self._close_current()
        count = self.num_shards or len(self.shards)
        for sf in self.shards:
            name = shard_name(self.base, sf.index if self.sharded else None, count)
            sf.final_rec = join_url(self.dir_url, name + ".rec")
            sf.final_idx = join_url(self.dir_url, name + ".idx")
        return self.shards

    def commit(self) -> List[ShardFile]:
        """Finish, then rename every temporary file to its final name; a sharded pack
        gets its manifest last (see :func:`commit_pack`)."""
        shards = self.finish()
        commit_pack(shards, self.dir_url, self.base, self.storage_options,
                    sharded=self.sharded)
        self._done = True
        return shards

    def abort(self) -> None:
        """Close and delete every temporary file (best effort)."""
        try:
            self._close_current()
        except Exception:
            pass
        remove_temps(self.shards, self.storage_options)
        self._done = True


# -- the packing loop --------------------------------------------------------------------------------

@dataclass
class Failure:
    """An image that was not packed: list index, path and why."""

    index: int
    path: str
    error: str


@dataclass
class PackReport:
    """What one packing run produced."""

    records: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    shards: List[ShardFile] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)
    report_url: Optional[str] = None


def _progress_bar(total: int, desc: str, enabled: Optional[bool]):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr,
                disable=(None if enabled is None else not enabled), leave=True)


def write_failure_report(url: str, failures: Sequence[Failure],
                         storage_options: Optional[Dict[str, Any]] = None) -> None:
    """A TSV of skipped images (index, path, error), written atomically."""
    text = "index\tpath\terror\n" + "".join(
        "%d\t%s\t%s\n" % (f.index, f.path, f.error.replace("\t", " ").replace("\n", " "))
        for f in failures)
    write_bytes_atomic(url, text.encode("utf-8"), storage_options)


def pack_entries(entries: Sequence[ListEntry], source: ImageSource, writer: ShardedWriter,
                 opts: EncodeOptions, *, num_thread: int = 1, pool: str = "thread",
                 on_error: str = "fail", progress: Optional[bool] = None,
                 desc: str = "im2rec") -> PackReport:
    """Encode and write ``entries``; leave the writer finished but NOT committed.

    On a failing image with ``on_error='fail'`` (or any other error) the
    writer is aborted (temporaries deleted) and :class:`PackError` raised.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"--on-error must be one of {ON_ERROR}, got {on_error!r}")
    report = PackReport()
    t0 = time.perf_counter()
    bar = _progress_bar(len(entries), desc, progress)
    last = 0.0
    try:
        for res in iter_encoded(entries, source, opts, num_thread, pool):
            if res.payload is None:
                fail = Failure(res.entry.index, res.entry.path, res.error or "unknown error")
                if on_error == "fail":
                    raise PackError(f"cannot pack image {source.url(fail.path)} (list index "
                                    f"{fail.index}): {fail.error}; use --on-error skip to "
                                    f"skip broken images")
                print(f"im2rec: skipped {source.url(fail.path)}: {fail.error}", file=sys.stderr)
                report.failures.append(fail)
            else:
                report.bytes_out += writer.write(res.pos, res.entry.index, res.payload)
                report.records += 1
            report.bytes_in += res.nbytes_in
            bar.update(1)
            now = time.perf_counter()
            if now - last > 0.25:
                el = max(now - t0, 1e-9)
                bar.set_postfix_str("%.1f MB/s in, %.1f MB/s out" % (
                    report.bytes_in / el / 1e6, report.bytes_out / el / 1e6), refresh=False)
                last = now
        report.shards = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    report.seconds = time.perf_counter() - t0
    return report
