"""File-level helpers of the shard cache: names, locks, checksums, writes, disk-full errors.

Kept apart from :mod:`cloudrec.storage.cache` so the cache's policy (lookup,
download once, cap, eviction) reads on its own.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import zlib
from typing import Any, Dict, Optional, Tuple

from cloudrec.errors import StorageError

CRC_CHUNK = 1 << 20  # fits the CPU's caches: the checksum reads what the read just wrote
EVICT_LOCK = ".evict.lock"
# every file the cache itself creates: <20 hex>-<12 hex>.<ext>; nothing else is ever removed
OWN_FILE = re.compile(r"^[0-9a-f]{20}-[0-9a-f]{12}\.(data|json|json\.tmp|ok|ok\.tmp\.\d+|lock|part|want|bad|tmp\.\d+\.\d+)$")
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
    """zlib.crc32 of a whole file, read into one reused 1 MB buffer (~1.5-2 GB/s from the
    page cache: fresh 8 MB ``os.read`` buffers cost more in page faults than the checksum,
    0.7-1 GB/s).  Plain reads, not a mapping: a file truncated meanwhile is a short
    checksum, never a SIGBUS."""
    buf = bytearray(CRC_CHUNK)
    view = memoryview(buf)
    crc = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return crc
            crc = zlib.crc32(view[:n], crc)


_CRC_POLY = 0xEDB88320  # zlib's CRC-32, reflected: bit 31 is the coefficient of x^0


def _crc_mulmod(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC-32 polynomial (both in the reflected bit order)."""
    product, bit = 0, 1 << 31
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return product


def _x_pow_8n(n: int) -> int:
    """x^(8n) modulo the polynomial: what appending n zero bytes multiplies a CRC by."""
    result, square = 1 << 31, 1 << 30        # x^0, then x^(2^k) for k = 0, 1, ...
    for _ in range(3):                       # x^8 = x^(2^3)
        square = _crc_mulmod(square, square)
    while n:
        if n & 1:
            result = _crc_mulmod(square, result)
        n >>= 1
        square = _crc_mulmod(square, square)
    return result


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)``, without the
    bytes (zlib has the function, Python's module does not expose it): a download that
    checksums each GET's bytes as they stream gets its file's CRC without reading the
    file again."""
    return _crc_mulmod(_x_pow_8n(len2), crc1) ^ crc2 if len2 > 0 else crc1


def _boot_id() -> Optional[int]:
    """This boot of the kernel (Linux's random boot id), or None where there is none."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return int(fh.read().strip().replace("-", ""), 16)
    except (OSError, ValueError):
        return None


#: Why a cache download needs no fsync where this is known: a published entry is
#: trusted without a new CRC only through a stamp naming this boot, and only a crash of
#: the kernel or the machine (then a new boot) can lose written pages; after one, each
#: entry's first use checks its CRC32 again, so a damaged entry is dropped, never served.
#: (A disk failing its writeback, EIO, can also lose pages without a reboot; fsync would
#: have reported it at download time, now ``cloudrec cache verify`` finds the damage.)
BOOT_ID: Optional[int] = _boot_id()


def stamp_of(path: str, st: os.stat_result) -> Tuple:
    """(path, device, inode, size, mtime_ns, ctime_ns, boot): what a verified entry must
    still show to be trusted without a new CRC (a write into the file moves its ctime;
    another boot may have lost pages that were never synced: :data:`BOOT_ID`)."""
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            BOOT_ID if BOOT_ID is not None else 0)


def write_stamp(path: str, stamp: Tuple) -> None:
    """Record a verified entry's stamp (without its path) in ``path`` (``<key>.ok``),
    atomically; best effort (a node that cannot write it checks the CRC again)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(" ".join(str(int(v)) for v in stamp))
        os.replace(tmp, path)
    except OSError:
        unlink(tmp)


def read_stamp(path: str) -> Optional[Tuple]:
    """The stamp :func:`write_stamp` recorded, or None."""
    try:
        with open(path) as fh:
            return tuple(int(v) for v in fh.read().split())
    except (OSError, ValueError):
        return None


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
