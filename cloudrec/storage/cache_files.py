"""File-level helpers of the shard cache: names, locks, checksums, writes, disk-full errors.

Kept apart from :mod:`cloudrec.storage.cache` so the cache's policy (lookup,
download once, cap, eviction) reads on its own.
"""
from __future__ import annotations

import bisect
import errno
import fcntl
import json
import os
import re
import struct
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, List, Optional, Tuple

from cloudrec.errors import StorageError

DOWNLOAD_CHUNK = 8 << 20
DOWNLOAD_WINDOW = 4  # chunk requests in flight per download (bounds its memory: 32 MB)
CRC_CHUNK = 8 << 20
EVICT_LOCK = ".evict.lock"
# every file the cache itself creates: <20 hex>-<12 hex>.<ext>; nothing else is ever removed
OWN_FILE = re.compile(r"^[0-9a-f]{20}-[0-9a-f]{12}\.(data|json|json\.tmp|lock|part|want|tmp\.\d+\.\d+)$")
TMP_FILE = re.compile(r"^(?P<key>[0-9a-f]{20}-[0-9a-f]{12})\.tmp\.\d+\.\d+$")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


class CacheUnavailable(StorageError):
    """The cache cannot take this shard (read-only, or full of shards in use): read it directly."""


class CacheReadOnlyError(CacheUnavailable):
    """The cache folder cannot be written: hits are served, misses are not stored."""


class CacheFullError(CacheUnavailable):
    """The shard does not fit the cap, even after evicting every entry not in use."""


class CacheDiskFullError(StorageError):
    """The disk holding the cache folder is full (ENOSPC/EDQUOT)."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def is_read_only(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _READ_ONLY


def disk_full_error(cache_dir: str, url: Optional[str], size: int, exc: OSError
                    ) -> CacheDiskFullError:
    return CacheDiskFullError(f"the disk of the cache folder {cache_dir} is full "
                              f"({exc.strerror or exc}): cannot store a shard of {size} bytes; "
                              "free space, lower the cache cap or choose another cache_dir", url)


def crc32_file(path: str) -> int:
    """zlib.crc32 of a whole file (about 1 GB/s; no dependency)."""
    crc = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            chunk = os.read(fd, CRC_CHUNK)
            if not chunk:
                return crc
            crc = zlib.crc32(chunk, crc)
    finally:
        os.close(fd)


def write_private_json(path: str, data: Dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of that name may have had wider rights
        write_all(fd, json.dumps(data).encode(), 0)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as fh:
            meta = json.load(fh)
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def write_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` until every byte is written (a full disk shows as a short write first)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[n:], offset + n


def reserve(path: str, size: int) -> None:
    """Create ``path`` with ``size`` bytes allocated, so a full disk fails now, not mid-download,
    and the cap can count bytes still being downloaded."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if size > 0:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                os.ftruncate(fd, size)  # a filesystem without fallocate: size only
    except BaseException:
        os.close(fd)
        unlink(path)
        raise
    os.close(fd)


FIRST_CHUNK = 1 << 20


def chunk_bounds(size: int, chunk: int = DOWNLOAD_CHUNK, first: int = FIRST_CHUNK):
    """``[(start, end)]`` covering ``[0, size)``.  A shard of one chunk or less is one GET;
    a larger one starts with 1 MB, 2 MB, 4 MB, ... up to ``chunk``, so its first records
    arrive early (streaming) for ~3 more GETs than equal chunks."""
    if size <= chunk:
        return [(0, size)] if size > 0 else []
    out, a, n = [], 0, max(1, min(first, chunk))
    while a < size:
        b = min(size, a + n)
        out.append((a, b))
        a, n = b, min(chunk, n * 2)
    return out


def download_ranges(submit: Callable[[int, int], "Future[bytes]"], size: int,
                    chunk: int = DOWNLOAD_CHUNK,
                    on_chunk: Optional[Callable[[int, int], None]] = None,
                    first: int = FIRST_CHUNK,
                    wants: Optional[Callable[[], List[int]]] = None) -> Callable[[str], None]:
    """A ``download(tmp_path)`` that fetches ``[0, size)`` in concurrent chunks, wanted ones first.

    ``submit(start, end)`` returns a Future of exactly those bytes (a
    RangeReader with retries), so a download gets the same retry policy,
    short-body and version checks as record reads.  The file is written in
    place (it may have been reserved at full size).  Chunks are fetched in
    file order, except that whenever a request slot frees, a chunk holding a
    byte offset returned by ``wants()`` (offsets readers are waiting for) goes
    first: a record deep inside a large shard waits for its own chunk, not for
    every byte before it.  After each chunk ``on_chunk(start, end)`` says that
    ``[start, end)`` is on disk (for readers that stream the shard meanwhile).
    ``first`` is the first chunk's size (``first=chunk``: equal chunks).
    """
    def download(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        bounds = chunk_bounds(size, chunk, first)
        starts = [a for a, _ in bounds]
        waiting = set(range(len(bounds)))   # not submitted yet
        urgent: List[int] = []              # wanted chunks, in the order they were asked for
        inflight: Dict["Future[bytes]", int] = {}
        cursor = 0
        try:
            try:
                while waiting or inflight:
                    if wants is not None:
                        for off in wants():
                            i = bisect.bisect_right(starts, off) - 1
                            if 0 <= i and i in waiting:
                                urgent.append(i)
                    while waiting and len(inflight) < DOWNLOAD_WINDOW:
                        i = -1
                        while urgent and i not in waiting:
                            i = urgent.pop(0)
                        if i not in waiting:
                            while cursor not in waiting:
                                cursor += 1
                            i = cursor
                        waiting.discard(i)
                        inflight[submit(*bounds[i])] = i
                    done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                    for f in sorted(done, key=lambda f: inflight[f]):
                        a, b = bounds[inflight.pop(f)]
                        write_all(fd, f.result(), a)
                        if on_chunk is not None:
                            on_chunk(a, b)
            except BaseException:
                for f in inflight:
                    f.cancel()
                raise
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
    return download


class ProgressFile:
    """``<key>.part``: which chunks of a download are in its temp file, for other processes
    that stream the shard meanwhile; ``<key>.want``: the offsets they wait for.

    The part file is one header line (shard size, chunk and first-chunk sizes, the temp
    file's name), then one byte per chunk of :func:`chunk_bounds`, ``0`` or ``1``,
    each set in place by a one-byte ``pwrite``.  The want file is appended to by the
    followers (8-byte little-endian offsets) and read by the downloader as it goes."""

    def __init__(self, tmp: str, size: int, chunk: int, first: int) -> None:
        folder, name = os.path.split(tmp)
        key = name.split(".tmp.")[0]
        self.path = os.path.join(folder, key + ".part")
        self.want_path = os.path.join(folder, key + ".want")
        self.bounds = chunk_bounds(size, chunk, first)
        self._index = {a: i for i, (a, _) in enumerate(self.bounds)}
        self._want_fd = os.open(self.want_path, os.O_RDONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._want_pos = 0
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        head = f"{size:x} {chunk:x} {first:x} {name}\n".encode()
        self._base = len(head)
        write_all(self.fd, head + b"0" * len(self.bounds), 0)

    def advance(self, start: int, end: int) -> None:
        """Chunk ``[start, end)`` is written."""
        i = self._index.get(start)
        if i is not None and self.fd >= 0:
            write_all(self.fd, b"1", self._base + i)

    def wants(self) -> List[int]:
        """Offsets the followers asked for since the last call."""
        if self._want_fd < 0:
            return []
        data = os.pread(self._want_fd, 1 << 16, self._want_pos)
        n = len(data) // 8
        self._want_pos += n * 8
        return list(struct.unpack(f"<{n}q", data[:n * 8])) if n else []

    def close(self) -> None:
        for name in ("fd", "_want_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def read_progress(part_path: str) -> Optional[Tuple[List[Tuple[int, int]], str]]:
    """(chunks written as ``[(start, end)]``, temp file path) of a download in progress,
    or None (no download, or its progress file is being written)."""
    try:
        with open(part_path, "rb") as fh:
            data = fh.read()
        head, _, bits = data.partition(b"\n")
        size, chunk, first, name = head.split(b" ", 3)
        name = name.strip().decode()
        if not TMP_FILE.match(name):
            return None
        bounds = chunk_bounds(int(size, 16), int(chunk, 16), int(first, 16))
        if len(bits) < len(bounds):
            return None
        done = [ab for ab, bit in zip(bounds, bits) if bit == ord("1")]
        return done, os.path.join(os.path.dirname(part_path), name)
    except (OSError, ValueError):
        return None


def ask_for(want_path: str, offsets: List[int]) -> bool:
    """Append ``offsets`` to a running download's want file; False when there is none yet."""
    if not offsets:
        return True
    try:
        fd = os.open(want_path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return False
    try:
        os.write(fd, struct.pack(f"<{len(offsets)}q", *offsets))  # one O_APPEND write
    finally:
        os.close(fd)
    return True


class Flock:
    """Exclusive (or shared) ``flock`` on a lock file, released on exit (or by the kernel on death)."""

    def __init__(self, path: str, blocking: bool = True, shared: bool = False) -> None:
        self.path, self.blocking, self.shared = path, blocking, shared
        self.fd = -1

    def __enter__(self) -> "Flock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # the cache folder is gone, read-only or not a folder
            cls = CacheReadOnlyError if is_read_only(exc) else StorageError
            raise cls(f"cannot use the cache folder: cannot create {self.path}: "
                      f"{type(exc).__name__}: {exc.strerror or exc}") from exc
        flags = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        try:
            fcntl.flock(self.fd, flags | (0 if self.blocking else fcntl.LOCK_NB))
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def lock_file_in_use(path: str) -> bool:
    """True while another open file holds a ``flock`` on ``path`` (a reader, a download)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def hold_shared(fd: int) -> None:
    """Mark an open cache file as in use: eviction skips files with a shared lock."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
