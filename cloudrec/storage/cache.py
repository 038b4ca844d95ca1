"""ShardCache: whole shards downloaded once per node into a local folder.

* Folder: the ``cache_dir`` argument, else ``$CLOUDREC_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/cloudrec/shards`` (``~/.cache/cloudrec/shards``).
* Key: hash of the URL plus hash of (remote size, ETag or mtime), so a changed
  object gets a new entry and the old one is dropped.
* A download writes ``<key>.tmp.<pid>.<n>`` and renames it when complete and
  of the right size: a killed download leaves only a temp file that is never
  read (and is removed by the next download of that key).
* ``fcntl.flock`` on ``<key>.lock`` makes the processes of one node download a
  shard once; the others wait and then use the file.
* A size cap with least-recently-used eviction (use = file mtime, touched on
  every hit).  Entries are plain files read with ``os.pread``.
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

from cloudrec.errors import StorageError

ENV_DIR = "CLOUDREC_CACHE_DIR"
ENV_MAX = "CLOUDREC_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 << 30
DOWNLOAD_CHUNK = 8 << 20
_counter = itertools.count()


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
    """One cached shard as ``cloudrec cache ls`` shows it."""

    key: str
    url: str
    size: int
    version: str
    path: str
    last_used: float


class ShardCache:
    """A node-local folder of whole shards with a size cap (see the module docstring)."""

    def __init__(self, cache_dir: Optional[str] = None, max_bytes: Optional[int] = None) -> None:
        self.dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
        if max_bytes is None:
            max_bytes = int(os.environ.get(ENV_MAX, DEFAULT_MAX_BYTES))
        self.max_bytes = int(max_bytes)
        self._make_dir()
        self.downloads = 0   # shards this object downloaded
        self.hits = 0        # lookups served from the folder

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
        return f"{_h(url)}-{_h(f'{size}|{version}', 12)}"

    def _p(self, key: str, ext: str) -> str:
        return os.path.join(self.dir, f"{key}.{ext}")

    def lookup(self, url: str, size: int, version: str) -> Optional[str]:
        """Path of a complete cached copy (and mark it used), or None."""
        path = self._p(self.key(url, size, version), "data")
        try:
            if os.stat(path).st_size == size:
                os.utime(path)
                return path
        except FileNotFoundError:
            pass
        return None

    # -- the one entry point -----------------------------------------------------------
    def get(self, url: str, size: int, version: str,
            download: Callable[[str], None],
            hold: Optional[Callable[[str], object]] = None) -> str:
        """Local path of the shard, downloading it with ``download(tmp_path)`` if needed.

        ``download`` must write the whole object to the given path.  ``hold(path)``,
        if given, runs while no eviction can remove the file (e.g. to open it), so a
        cap smaller than the shards in use cannot pull it away first.  Raises
        StorageError when the shard is larger than the cap or the download is
        short.
        """
        found = self.lookup(url, size, version)
        if found and self._hold(found, hold):
            self.hits += 1
            return found
        if size > self.max_bytes:
            raise StorageError(f"shard of {size} bytes does not fit the cache cap of "
                               f"{self.max_bytes} bytes in {self.dir}", url)
        key = self.key(url, size, version)
        self._make_dir(url)
        final = self._p(key, "data")
        with _Flock(self._p(key, "lock")):
            found = self.lookup(url, size, version)
            if found and self._hold(found, hold):  # another process finished it meanwhile
                self.hits += 1
                return found
            self._remove_temps(key)
            self._drop_other_versions(url, key)
            self.evict(incoming=size)
            tmp = self._p(key, f"tmp.{os.getpid()}.{next(_counter)}")
            try:
                download(tmp)
                got = os.path.getsize(tmp)
                if got != size:
                    raise StorageError(f"download gave {got} of {size} bytes", url)
                with open(self._p(key, "json.tmp"), "w") as fh:
                    json.dump({"url": url, "size": size, "version": version}, fh)
                os.replace(self._p(key, "json.tmp"), self._p(key, "json"))
                with _Flock(os.path.join(self.dir, ".evict.lock")):
                    os.replace(tmp, final)
                    if hold is not None:
                        hold(final)
            except BaseException:
                _unlink(tmp)
                raise
            self.downloads += 1
        self.evict(keep=(key,))
        return final

    def _hold(self, path: str, hold: Optional[Callable[[str], object]]) -> bool:
        """Run ``hold(path)`` under the eviction lock; False if the file was evicted meanwhile."""
        if hold is None:
            return True
        with _Flock(os.path.join(self.dir, ".evict.lock")):
            try:
                hold(path)
            except FileNotFoundError:
                return False
        return True

    # -- listing and eviction ---------------------------------------------------------------
    def entries(self) -> List[CacheEntry]:
        """Complete entries, least recently used first."""
        out = []
        for name in os.listdir(self.dir):
            if not name.endswith(".data"):
                continue
            key = name[:-5]
            path = os.path.join(self.dir, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            meta: Dict[str, object] = {}
            try:
                with open(self._p(key, "json")) as fh:
                    meta = json.load(fh)
            except (OSError, ValueError):
                pass
            out.append(CacheEntry(key, str(meta.get("url", "?")), st.st_size,
                                  str(meta.get("version", "")), path, st.st_mtime))
        out.sort(key=lambda e: e.last_used)
        return out

    def total_bytes(self) -> int:
        """Bytes held by complete entries."""
        return sum(e.size for e in self.entries())

    def evict(self, incoming: int = 0, keep: tuple = ()) -> int:
        """Remove least recently used entries until ``total + incoming <= max_bytes``."""
        freed = 0
        with _Flock(os.path.join(self.dir, ".evict.lock")):
            entries = self.entries()
            total = sum(e.size for e in entries) + incoming
            for e in entries:
                if total <= self.max_bytes:
                    break
                if e.key in keep:
                    continue
                self._remove(e.key)
                total -= e.size
                freed += e.size
        return freed

    def remove(self, url: str) -> int:
        """Drop every cached version of ``url``; returns how many were removed."""
        prefix = _h(url) + "-"
        n = 0
        for e in self.entries():
            if e.key.startswith(prefix):
                self._remove(e.key)
                n += 1
        return n

    def clear(self) -> int:
        """Remove all entries (and leftover temp files); returns entries removed."""
        n = 0
        for e in self.entries():
            self._remove(e.key)
            n += 1
        for name in os.listdir(self.dir):
            if name.startswith(".") or not (".tmp." in name or name.endswith(".json")):
                continue
            key = name.split(".")[0]
            try:  # a key being downloaded right now keeps its temp file
                with _Flock(self._p(key, "lock"), blocking=False):
                    if not os.path.exists(self._p(key, "data")):
                        _unlink(os.path.join(self.dir, name))
                    elif ".tmp." in name:
                        _unlink(os.path.join(self.dir, name))
            except BlockingIOError:
                pass
        return n

    def _remove(self, key: str) -> None:
        _unlink(self._p(key, "data"))
        _unlink(self._p(key, "json"))

    def _remove_temps(self, key: str) -> None:
        prefix = f"{key}.tmp."
        for name in os.listdir(self.dir):
            if name.startswith(prefix):
                _unlink(os.path.join(self.dir, name))

    def _drop_other_versions(self, url: str, key: str) -> None:
        prefix = _h(url) + "-"
        for name in os.listdir(self.dir):
            if name.startswith(prefix) and name.endswith(".data") and name[:-5] != key:
                self._remove(name[:-5])


def download_ranges(submit: Callable[[int, int], "Future[bytes]"], size: int,
                    chunk: int = DOWNLOAD_CHUNK) -> Callable[[str], None]:
    """A ``download(tmp_path)`` that fetches ``[0, size)`` in concurrent chunks.

    ``submit(start, end)`` returns a Future of exactly those bytes (a
    RangeReader with retries), so a download gets the same retry policy and
    short-body checks as record reads.
    """
    def download(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            futs = [(a, submit(a, min(size, a + chunk))) for a in range(0, size, chunk)]
            try:
                for a, f in futs:
                    data = f.result()
                    os.pwrite(fd, data, a)
            except BaseException:
                for _, f in futs:
                    f.cancel()
                raise
            os.fsync(fd)
        finally:
            os.close(fd)
    return download


class _Flock:
    """Exclusive ``flock`` on a lock file, released on exit (or by the kernel on death)."""

    def __init__(self, path: str, blocking: bool = True) -> None:
        self.path, self.blocking = path, blocking
        self.fd = -1

    def __enter__(self) -> "_Flock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # the cache folder is gone, read-only or not a folder
            raise StorageError(f"cannot use the cache folder: cannot create {self.path}: "
                               f"{type(exc).__name__}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
