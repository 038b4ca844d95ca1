"""ShardCache: whole shards downloaded once per node into a local folder.

* Folder: the ``cache_dir`` argument, else ``$CLOUDREC_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/cloudrec/shards`` (``~/.cache/cloudrec/shards``).
* Key: hash of the URL (secrets masked first) plus hash of (remote size, ETag
  or mtime), so a changed object gets a new entry and the old one is dropped.
* A download reserves ``<key>.tmp.<pid>.<n>`` at full size (a full disk fails
  at once, as a :class:`CacheDiskFullError` naming the folder), fills it and
  renames it when complete: a killed download leaves only a temp file that is
  never read (and is removed by the next download or eviction).
* Integrity: the CRC32 of each shard is recorded in ``<key>.json`` (with the
  redacted URL; mode 0600) at download and checked the first time the node
  opens the entry; a mismatch (flipped bytes, same size) drops the entry and
  downloads it again.  A check that passed leaves ``<key>.ok``, the data
  file's inode, size, mtime and ctime at that moment: the node's other
  processes trust an entry whose stamp still matches instead of reading it
  all again, and any write into the file (which moves its ctime) sends it
  back to a full check.  ``cloudrec cache verify`` checks every entry.
* ``fcntl.flock`` on ``<key>.lock`` makes the processes of one node download a
  shard once; the others wait and then use the file (meanwhile they may stream
  from it: the download reports progress in ``<key>.part``).  If the
  downloading process dies, the next holder of the lock continues from the
  pieces its temp file holds (``resumable=True``).
* A size cap with least-recently-used eviction (use = the ``.json``'s mtime,
  touched on every hit).  Readers hold a shared ``flock`` on the entries they read;
  eviction skips held entries (deleting them would not free their space), and
  a shard that still does not fit raises :class:`CacheFullError`, which the
  fetcher answers by reading that shard directly.  Bytes being downloaded
  count against the cap, so the cap holds with concurrent downloads.
* A read-only folder (e.g. a pre-filled cache mounted read-only) serves hits;
  a miss raises :class:`CacheReadOnlyError` (the fetcher warns once and reads
  the shard directly).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Set, Tuple

from cloudrec.errors import ChecksumMismatchError, StorageError
from cloudrec.storage.cache_files import (EVICT_LOCK, OWN_FILE, CacheDiskFullError,
                                          CacheFullError, CacheReadOnlyError, CacheUnavailable,
                                          Flock, crc32_file, disk_full_error,
                                          is_disk_full, is_read_only, read_json, read_stamp,
                                          reserve, stamp_of, unlink, write_private_json,
                                          write_stamp)
from cloudrec.storage.cache_admin import CacheMaintenance
from cloudrec.storage.cache_download import download_ranges
from cloudrec.storage.cache_progress import partial_download
from cloudrec.storage.fork_locks import renew_in_child
from cloudrec.storage.redact import redact_url

__all__ = ["ShardCache", "CacheEntry", "default_cache_dir", "download_ranges", "CacheUnavailable",
           "CacheReadOnlyError", "CacheFullError", "CacheDiskFullError"]

ENV_DIR = "CLOUDREC_CACHE_DIR"
ENV_MAX = "CLOUDREC_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 << 30
_counter = itertools.count()
_VERIFIED: Set[Tuple] = set()  # stamp_of() of entries this process has checked
_VERIFIED_LOCK = threading.Lock()
renew_in_child(__name__, "_VERIFIED_LOCK")  # a download thread may hold it at a fork


def default_cache_dir() -> str:
    """``$CLOUDREC_CACHE_DIR``, else the user cache dir + ``cloudrec/shards``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cloudrec", "shards")


def _h(text: str, n: int = 20) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass
class CacheEntry:
    """One cached shard as ``cloudrec cache ls`` shows it (``url`` has its secrets masked)."""

    key: str
    url: str
    size: int
    version: str
    path: str
    last_used: float
    crc32: Optional[int] = None


class ShardCache(CacheMaintenance):
    """A node-local folder of whole shards with a size cap (see the module docstring)."""

    def __init__(self, cache_dir: Optional[str] = None, max_bytes: Optional[int] = None) -> None:
        self.dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
        if max_bytes is None:
            max_bytes = int(os.environ.get(ENV_MAX, DEFAULT_MAX_BYTES))
        self.max_bytes = int(max_bytes)
        self._make_dir()
        self.read_only = not os.access(self.dir, os.W_OK)
        self.downloads = 0   # shards this object downloaded
        self.hits = 0        # lookups served from the folder
        self.corrupt = 0     # entries found damaged and dropped
        self.resumed = 0     # downloads continued from the pieces a dead one left

    def __repr__(self) -> str:
        ro = ", read-only" if self.read_only else ""
        return f"ShardCache({self.dir!r}, max_bytes={self.max_bytes}{ro})"

    def _make_dir(self, url: Optional[str] = None) -> None:
        """Create the folder (again, if a cleaner removed it); an unusable one is a StorageError."""
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot use the cache folder {self.dir}: "
                               f"{type(exc).__name__}: {exc.strerror or exc}", url) from exc

    # -- naming ---------------------------------------------------------------------
    def key(self, url: str, size: int, version: str) -> str:
        """``<hash(url)>-<hash(size, version)>``: same URL prefix for every version."""
        return f"{_h(redact_url(url))}-{_h(f'{size}|{version}', 12)}"

    def _p(self, key: str, ext: str) -> str:
        return os.path.join(self.dir, f"{key}.{ext}")

    def lookup(self, url: str, size: int, version: str) -> Optional[str]:
        """Path of a complete, intact cached copy (and mark it used), or None.

        The first lookup of an entry in this process checks its CRC32; a
        damaged entry (or one without a checksum) is dropped and None returned.
        """
        key = self.key(url, size, version)
        path = self._p(key, "data")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if st.st_size != size or not self._intact(key, path, st, url):
            return None
        self.mark_used(path)
        return path

    def mark_used(self, data_path: str) -> None:
        """Least-recently-used bookkeeping: touch the entry's ``.json`` (the data file's own
        times are part of its verified stamp, so they are left alone)."""
        try:
            os.utime(data_path[:-len(".data")] + ".json")
        except OSError:
            pass  # read-only folder, or evicted this instant: the caller's hold tells

    def _intact(self, key: str, path: str, st: os.stat_result, url: Optional[str]) -> bool:
        mark = stamp_of(path, st)
        if mark in _VERIFIED:
            return True
        if read_stamp(self._p(key, "ok")) == mark[1:]:  # verified by a process of this node
            with _VERIFIED_LOCK:
                _VERIFIED.add(mark)
            return True
        want = read_json(self._p(key, "json")).get("crc32")
        try:
            got = crc32_file(path)
        except FileNotFoundError:
            return False
        if isinstance(want, int) and got == want:
            with _VERIFIED_LOCK:
                _VERIFIED.add(mark)
            if not self.read_only:
                write_stamp(self._p(key, "ok"), mark[1:])
            return True
        self.corrupt += 1
        why = "has no checksum" if not isinstance(want, int) else \
            f"is damaged (CRC32 {got:08x}, recorded {want:08x})"
        if self.read_only:
            warnings.warn(f"cloudrec cache: entry {path} {why}; the folder is read-only, so the "
                          f"shard is read directly ({redact_url(url) if url else key})",
                          RuntimeWarning, stacklevel=3)
        else:
            self._remove(key)
        return False

    # -- the one entry point -----------------------------------------------------------
    def get(self, url: str, size: int, version: str,
            download: Callable[[str], Optional[int]],
            hold: Optional[Callable[[str], object]] = None,
            follow: Optional[Callable[[str], Callable[[], None]]] = None,
            resumable: bool = False) -> str:
        """Local path of the shard, downloading it with ``download(tmp_path)`` if needed.

        ``download`` must write the whole object to the given path (which may
        exist already, reserved at full size); it may return the file's
        ``zlib.crc32`` (checksummed as it wrote), else the file is read to get
        it.  ``hold(path)``, if given, runs while no eviction can remove the
        file (e.g. to open it and take a shared lock), so a cap smaller than the
        shards in use cannot pull it away first.  Raises :class:`CacheFullError` when the shard does not fit
        the cap, :class:`CacheReadOnlyError` on a miss in a read-only folder,
        :class:`CacheDiskFullError` when the disk is full, StorageError when
        the download is short.  ``follow(part_path)``, if given, is called when
        another process is downloading the shard right now (before waiting for
        it); it returns a ``stop()`` called once the wait is over.  A download
        may report its progress in ``part_path`` (:func:`progress_path`) for
        such followers; the cache removes that file when the download ends.
        ``resumable``: when a download of this key died with pieces on disk
        (:func:`~cloudrec.storage.cache_progress.partial_download`), its temp file
        is taken over and ``download(tmp, have)`` is called with the ``[(start,
        end)]`` runs already written, so those bytes are not fetched again.
        """
        found = self.lookup(url, size, version)
        if found and self._hold(found, hold):
            self.hits += 1
            return found
        if self.read_only or not os.access(self.dir, os.W_OK):
            self.read_only = os.path.isdir(self.dir)
            raise CacheReadOnlyError(f"the cache folder {self.dir} is read-only: "
                                     "cannot store the shard", url)
        if size > self.max_bytes:
            raise CacheFullError(f"shard of {size} bytes does not fit the cache cap of "
                                 f"{self.max_bytes} bytes in {self.dir}", url)
        key = self.key(url, size, version)
        self._make_dir(url)
        final = self._p(key, "data")
        since = time.time()
        with self._key_lock(key, follow):
            self._check_followed(key, since, url)
            found = self.lookup(url, size, version)
            if found and self._hold(found, hold):  # another process finished it meanwhile
                self.hits += 1
                return found
            tmp = self._p(key, f"tmp.{os.getpid()}.{next(_counter)}")
            have = self._take_over(key, size, tmp) if resumable else None
            self._remove_temps(key, keep=tmp if have else None)
            self._drop_other_versions(url, key)
            try:
                with Flock(os.path.join(self.dir, EVICT_LOCK)):
                    # a taken-over temp file is counted already (a download's, under our lock)
                    if not self._make_room(0 if have else size, keep=(key,)):
                        raise CacheFullError(
                            f"shard of {size} bytes does not fit the cache cap of "
                            f"{self.max_bytes} bytes in {self.dir}: the other entries are in use",
                            url)
                    if not have:
                        reserve(tmp, size)  # counted against the cap from now on
                crc = download(tmp, have) if have else download(tmp)
                got = os.path.getsize(tmp)
                if got != size:
                    raise StorageError(f"download gave {got} of {size} bytes", url)
                if not isinstance(crc, int) or isinstance(crc, bool):
                    crc = crc32_file(tmp)   # the download did not checksum what it wrote
                write_private_json(self._p(key, "json"),
                                   {"url": redact_url(url), "size": size, "version": version,
                                    "crc32": crc})
                with Flock(os.path.join(self.dir, EVICT_LOCK)):
                    os.replace(tmp, final)
                    if hold is not None:
                        hold(final)
                mark = stamp_of(final, os.stat(final))
                with _VERIFIED_LOCK:
                    _VERIFIED.add(mark)
                write_stamp(self._p(key, "ok"), mark[1:])
                unlink(self._p(key, "bad"))
            except OSError as exc:
                unlink(tmp)
                if isinstance(exc, ChecksumMismatchError):   # for processes that followed it
                    with contextlib.suppress(OSError):
                        with open(self._p(key, "bad"), "w") as f:
                            f.write(str(exc))
                if is_disk_full(exc):
                    raise disk_full_error(self.dir, url, size, exc) from None
                if is_read_only(exc) and not isinstance(exc, StorageError):
                    self.read_only = True
                    raise CacheReadOnlyError(f"cannot write to the cache folder {self.dir}: "
                                             f"{exc.strerror or exc}", url) from None
                raise
            except BaseException:
                unlink(tmp)
                raise
            finally:
                unlink(self._p(key, "part"))
                unlink(self._p(key, "want"))
            self.downloads += 1
        return final

    def _check_followed(self, key: str, since: float, url: str) -> None:
        """Raise ChecksumMismatchError if a download of ``key`` failed its checksum after
        ``since``: this process may have streamed records from those bytes meanwhile."""
        try:
            bad = self._p(key, "bad")
            if os.stat(bad).st_mtime < since:
                return
            with open(bad) as f:
                why = f.read(2000)
        except OSError:
            return
        raise ChecksumMismatchError(f"the download this process followed failed: {why}", url)

    def _take_over(self, key: str, size: int, tmp: str) -> Optional[List[Tuple[int, int]]]:
        """Rename a dead download's temp file to ``tmp`` and return the runs it has on
        disk, or None (nothing to continue from).  Called with the key's lock held."""
        found = partial_download(self._p(key, "part"), size)
        if found is None:
            return None
        try:
            os.rename(found[0], tmp)
        except OSError:   # removed meanwhile by another process's stale-temp sweep
            return None
        self.resumed += 1
        return found[1]

    @contextlib.contextmanager
    def _key_lock(self, key: str, follow: Optional[Callable[[str], Callable[[], None]]]
                  ) -> Iterator[None]:
        """The key's download lock; while another process holds it, ``follow`` its progress."""
        lock = Flock(self._p(key, "lock"), blocking=False)
        try:
            lock.__enter__()
        except BlockingIOError:
            stop = follow(self._p(key, "part")) if follow is not None else None
            try:
                lock = Flock(self._p(key, "lock"))
                lock.__enter__()
            finally:
                if stop is not None:
                    stop()
        try:
            yield
        finally:
            lock.__exit__()

    def _hold(self, path: str, hold: Optional[Callable[[str], object]]) -> bool:
        """Run ``hold(path)`` under the eviction lock; False if the file was evicted meanwhile."""
        if hold is None:
            return True
        try:
            lock = Flock(os.path.join(self.dir, EVICT_LOCK))
            lock.__enter__()
        except CacheReadOnlyError:  # nobody evicts in a read-only folder
            lock = None
        try:
            hold(path)
        except FileNotFoundError:
            return False
        finally:
            if lock is not None:
                lock.__exit__()
        return True

    # -- listing and eviction ---------------------------------------------------------------
    def entries(self) -> List[CacheEntry]:
        """Complete entries, least recently used first."""
        out = []
        for name in os.listdir(self.dir):
            if not name.endswith(".data") or not OWN_FILE.match(name):
                continue
            key = name[:-5]
            path = os.path.join(self.dir, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            meta = read_json(self._p(key, "json"))
            crc = meta.get("crc32")
            try:
                used = os.stat(self._p(key, "json")).st_mtime  # see mark_used
            except FileNotFoundError:
                used = st.st_mtime
            out.append(CacheEntry(key, redact_url(str(meta.get("url", "?"))), st.st_size,
                                  str(meta.get("version", "")), path, used,
                                  crc if isinstance(crc, int) else None))
        out.sort(key=lambda e: e.last_used)
        return out

    def _remove_temps(self, key: str, keep: Optional[str] = None) -> None:
        prefix = f"{key}.tmp."
        for name in os.listdir(self.dir):
            if name.startswith(prefix) and os.path.join(self.dir, name) != keep:
                unlink(os.path.join(self.dir, name))

    def _url_prefix(self, url: str) -> str:
        """The key prefix every cached version of ``url`` shares."""
        return _h(redact_url(url)) + "-"

    def _drop_other_versions(self, url: str, key: str) -> None:
        prefix = self._url_prefix(url)
        for name in os.listdir(self.dir):
            if name.startswith(prefix) and name.endswith(".data") and name[:-5] != key:
                self._remove_unheld(name[:-5])
