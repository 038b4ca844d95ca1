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
import concurrent.futures as cf
import multiprocessing
import os
import posixpath
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.errors import CloudrecError, ConfigError, ImageDecodeError, StorageError
from cloudrec.format.framing import encoded_length
from cloudrec.format.irheader import IRHeader, pack
from cloudrec.format.lst import ListEntry
from cloudrec.format.manifest import ManifestShard, build_manifest, manifest_name
from cloudrec.image.decode import decode_image
from cloudrec.recordio import MXIndexedRecordIO, pack_img, storage_errors
from cloudrec.storage.fs import join_url, resolve
from cloudrec.storage.writes import write_bytes

ON_ERROR = ("fail", "skip")
CHECKS = ("none", "header", "decode")


class PackError(CloudrecError):
    """An image could not be packed (and --on-error is 'fail')."""


@dataclass(frozen=True)
class EncodeOptions:
    """How one image becomes a record payload (im2rec's packing flags)."""

    pass_through: bool = False
    resize: int = 0
    center_crop: bool = False
    quality: int = 95
    color: int = 1
    encoding: str = ".jpg"
    pack_label: bool = False
    check: str = "header"  # pass-through only: none | header (magic bytes) | decode


# -- turning bytes into a payload (pure) ---------------------------------------------------------

_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
    (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"), (b"\xff\x4f\xff\x51", "jpeg2000"),
)


def sniff_image(data: bytes) -> Optional[str]:
    """The image format named by the first bytes, or None when they are not an image's."""
    for sig, name in _SIGNATURES:
        if data.startswith(sig):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "pnm"
    return None


def make_header(entry: ListEntry, pack_label: bool) -> IRHeader:
    """im2rec's header: id = list index; all labels when --pack-label and >1, else the first."""
    if not entry.labels:
        raise PackError(f"list entry {entry.index} ({entry.path}) has no label")
    if pack_label and len(entry.labels) > 1:
        return IRHeader(0, list(entry.labels), entry.index, 0)
    return IRHeader(0, entry.labels[0], entry.index, 0)


def transform_image(img: np.ndarray, resize: int, center_crop: bool) -> np.ndarray:
    """Central square crop (before resizing), then shorter side -> ``resize`` (bilinear)."""
    import cv2

    h, w = img.shape[:2]
    if center_crop:
        if h > w:
            m = (h - w) // 2
            img = img[m:m + w, :]
        else:
            m = (w - h) // 2
            img = img[:, m:m + h]
        h, w = img.shape[:2]
    if resize:
        size = (resize, h * resize // w) if h > w else (w * resize // h, resize)
        img = cv2.resize(img, size)
    return img


def build_payload(entry: ListEntry, data: bytes, opts: EncodeOptions) -> bytes:
    """The record payload (IRHeader + labels + image) for one list entry's file bytes.

    Raises :class:`ImageDecodeError` for bytes that are not a usable image.
    """
    header = make_header(entry, opts.pack_label)
    if opts.pass_through:
        if opts.check != "none" and sniff_image(data) is None:
            raise ImageDecodeError(f"not an image (first bytes {data[:8]!r})")
        if opts.check == "decode":
            decode_image(data, cv_flag=-1)  # the pixel guard, then a full decode
        return pack(header, data)
    img = decode_image(data, cv_flag=opts.color)
    img = transform_image(img, opts.resize, opts.center_crop)
    return pack_img(header, img, quality=opts.quality, img_fmt=opts.encoding)


# -- reading and encoding in a pool ----------------------------------------------------------------

class ImageSource:
    """Reads image files relative to a root URL; picklable (reopens in worker processes)."""

    def __init__(self, root_url: str, storage_options: Optional[Dict[str, Any]] = None) -> None:
        self.root_url = os.fspath(root_url)
        self.storage_options = dict(storage_options or {})
        self._fs = None
        self._root = None
        self._local = False

    def __getstate__(self) -> Dict[str, Any]:
        return {"root_url": self.root_url, "storage_options": self.storage_options,
                "_fs": None, "_root": None, "_local": False}

    def _resolve(self):
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            self._fs, self._root = resolve(self.root_url, self.storage_options)
            self._local = isinstance(self._fs, LocalFileSystem)
        return self._fs, self._root

    def url(self, relpath: str) -> str:
        return join_url(self.root_url, relpath)

    def read(self, relpath: str) -> bytes:
        fs, root = self._resolve()
        path = posixpath.join(root, relpath) if root else relpath
        if self._local:
            with open(path, "rb") as f:  # skips fsspec's per-call overhead (~50 us)
                return f.read()
        return fs.cat_file(path)

    def size(self, relpath: str) -> int:
        fs, root = self._resolve()
        return int(fs.size(posixpath.join(root, relpath)))


@dataclass
class Encoded:
    """One worker result: the payload, or the error that stopped it."""

    pos: int
    entry: ListEntry
    payload: Optional[bytes]
    error: Optional[str]
    nbytes_in: int


def encode_one(source: ImageSource, entry: ListEntry, opts: EncodeOptions, pos: int) -> Encoded:
    """Read one image and build its payload; errors are returned, never raised."""
    try:
        data = source.read(entry.path)
    except Exception as exc:  # missing, unreadable, permission, network: all per-image errors
        return Encoded(pos, entry, None, f"cannot read: {type(exc).__name__}: {exc}", 0)
    try:
        return Encoded(pos, entry, build_payload(entry, data, opts), None, len(data))
    except ImageDecodeError as exc:
        return Encoded(pos, entry, None, str(exc), len(data))
    except Exception as exc:  # cv2 errors on exotic input
        return Encoded(pos, entry, None, f"{type(exc).__name__}: {exc}", len(data))


def encode_batch(source: ImageSource, batch: Sequence[Tuple[int, ListEntry]],
                 opts: EncodeOptions) -> List[Encoded]:
    """``encode_one`` over a few entries: one task per batch keeps pool overhead small."""
    return [encode_one(source, e, opts, pos) for pos, e in batch]


def iter_encoded(entries: Sequence[ListEntry], source: ImageSource, opts: EncodeOptions,
                 num_thread: int = 1, pool: str = "thread", window: Optional[int] = None,
                 batch: Optional[int] = None) -> Iterator[Encoded]:
    """Encode ``entries`` with ``num_thread`` workers, yielding results in list order.

    Work goes out in batches of ``batch`` entries (default: 8 for pass-through,
    where a task is tiny, else 2); at most ``window`` batches are in flight,
    so memory stays bounded.  ``num_thread <= 1`` runs inline (no pool).
    """
    if num_thread <= 1:
        for pos, e in enumerate(entries):
            yield encode_one(source, e, opts, pos)
        return
    if pool == "thread":
        ex: cf.Executor = cf.ThreadPoolExecutor(num_thread, thread_name_prefix="im2rec")
    elif pool == "process":
        # never plain fork: a forked child inherits filesystem clients whose IO threads
        # (hdfs-native's runtime, s3fs's event loop) do not exist in it, and hangs
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() \
            else "spawn"
        ex = cf.ProcessPoolExecutor(num_thread, mp_context=multiprocessing.get_context(method))
    else:
        raise ConfigError(f"unknown pool {pool!r} (thread or process)")
    if not batch:  # small tasks for pass-through, but enough of them to keep every worker busy
        batch = max(1, min(8 if opts.pass_through else 2, len(entries) // (4 * num_thread)))
    window = window or max(4, 3 * num_thread)
    items = list(enumerate(entries))
    batches = iter(items[i:i + batch] for i in range(0, len(items), batch))
    pending: deque = deque()
    try:
        for b in batches:
            pending.append(ex.submit(encode_batch, source, b, opts))
            if len(pending) >= window:
                break
        while pending:
            results = pending.popleft().result()
            nxt = next(batches, None)
            if nxt is not None:
                pending.append(ex.submit(encode_batch, source, nxt, opts))
            yield from results
    finally:
        for f in pending:
            f.cancel()
        ex.shutdown(wait=True, cancel_futures=True)


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


def replace_file(fs, src: str, dst: str) -> None:
    """Rename ``src`` onto ``dst``, replacing an existing ``dst`` on every backend.

    POSIX and S3 overwrite on their own; HDFS refuses unless asked (hdfs-native's
    ``overwrite=True`` keeps it one atomic rename); a store that refuses
    otherwise gets ``dst`` removed first.
    """
    if fs.isdir(dst):  # local and HDFS renames would move src *into* the folder
        raise StorageError("the destination is a folder; refusing to replace it", dst)
    if type(fs).__module__.startswith("hdfs_native"):
        fs.mv(src, dst, overwrite=True)
        return
    try:
        fs.mv(src, dst)
    except OSError:
        if not fs.exists(dst):
            raise
        fs.rm(dst)
        fs.mv(src, dst)
        return
    if src != dst and fs.exists(src):  # refused without an error (e.g. WebHDFS)
        fs.rm(dst)
        fs.mv(src, dst)


def write_bytes_atomic(url: str, data: bytes,
                       storage_options: Optional[Dict[str, Any]] = None) -> None:
    """Write ``data`` to a temporary name next to ``url``, then rename it into place."""
    fs, path = resolve(url, storage_options)
    parent = posixpath.dirname(path)
    tmp = posixpath.join(parent, ".%s.tmp-%s" % (posixpath.basename(path), uuid.uuid4().hex[:10]))
    head, _, name = url.rstrip("/").rpartition("/")
    tmp_url = (head + "/" if head else "") + posixpath.basename(tmp)
    # time-limited (storage.writes); the parent is a file or there is no endpoint: StorageError
    try:
        write_bytes(tmp_url, data, storage_options)
    except StorageError as exc:  # name the file the user asked for, keep the class
        raise type(exc)(f"cannot write: {exc}", url) from exc
    try:
        with storage_errors(url, "move into place"):
            replace_file(fs, tmp, path)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except Exception:  # best effort: the first error is the one to report
            pass
        raise


def commit_shards(shards: Sequence[ShardFile], storage_options: Optional[Dict[str, Any]] = None
                  ) -> None:
    """Rename temporaries to final names: `.idx` first, then `.rec` (a lone `.idx` is
    obviously unfinished, a lone `.rec` is not)."""
    for sf in shards:
        for tmp, final in ((sf.tmp_idx, sf.final_idx), (sf.tmp_rec, sf.final_rec)):
            fs, src = resolve(tmp, storage_options)
            _, dst = resolve(final, storage_options)
            try:
                replace_file(fs, src, dst)
            except StorageError:  # already names the file
                raise
            except Exception as exc:  # OSError, botocore errors, ...
                raise StorageError(f"cannot rename {tmp} to its final name: "
                                   f"{type(exc).__name__}: {exc}", final) from exc


def commit_pack(shards: Sequence[ShardFile], dir_url: str, base: str,
                storage_options: Optional[Dict[str, Any]] = None, *, sharded: bool = True
                ) -> Optional[str]:
    """Publish a pack so that it appears complete or not at all; the manifest URL.

    On object storage a rename is a copy plus a delete, so shards become
    visible one by one.  The order makes every intermediate state detectable
    by ``open_dataset`` on a glob or brace range: (1) an older manifest of the
    same name goes first (a mix of old and new shards must not pass for the
    old pack), (2) the shards are renamed (temporaries still visible), (3)
    ``BASE.manifest.json`` with names, sizes and record counts is written last.
    A single unsharded output needs no manifest (its `.idx` is renamed first).
    """
    manifest_url = join_url(dir_url, manifest_name(base)) if sharded else None
    if manifest_url is not None:
        fs, path = resolve(manifest_url, storage_options)
        with storage_errors(manifest_url, "remove the old pack manifest"):
            if fs.exists(path):
                fs.rm(path)
    commit_shards(shards, storage_options)
    if manifest_url is not None:
        entries = [ManifestShard(posixpath.basename(sf.final_rec.split("://", 1)[-1]),
                                 sf.nbytes, sf.records) for sf in shards]
        write_bytes_atomic(manifest_url, build_manifest(base, entries), storage_options)
    return manifest_url


def remove_temps(shards: Sequence[ShardFile], storage_options: Optional[Dict[str, Any]] = None
                 ) -> None:
    """Delete the temporary files of ``shards``; missing ones are fine."""
    for sf in shards:
        for tmp in (sf.tmp_rec, sf.tmp_idx):
            try:
                fs, path = resolve(tmp, storage_options)
                if fs.exists(path):
                    fs.rm(path)
            except Exception:
                pass


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
