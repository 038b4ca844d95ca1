"""The shard cache's maintenance: eviction under the cap, and the commands ``cloudrec cache
clear/verify`` and removal by URL: a mixin of :class:`cloudrec.storage.cache.ShardCache`,
kept apart from the read path.  Each touches only files the cache made, and leaves alone
what a live download or a reader holds."""
from __future__ import annotations

import fcntl
import os
from typing import TYPE_CHECKING, List, Tuple

from cloudrec.storage.cache_files import (EVICT_LOCK, OWN_FILE, TMP_FILE, Flock, crc32_file,
                                          lock_file_in_use, unlink)

if TYPE_CHECKING:
    from cloudrec.storage.cache import CacheEntry

__all__ = ["CacheMaintenance"]


class CacheMaintenance:
    """Eviction (LRU, entries in use kept), ``remove``, ``clear`` and ``verify`` over
    ShardCache's entries and files."""

    def total_bytes(self) -> int:
        """Bytes held by complete entries."""
        return sum(e.size for e in self.entries())

    def _pending_bytes(self) -> int:
        """Bytes reserved by downloads in progress; stale temp files (no live download) go."""
        total = 0
        for name in os.listdir(self.dir):
            m = TMP_FILE.match(name)
            if not m:
                continue
            path = os.path.join(self.dir, name)
            if lock_file_in_use(self._p(m.group("key"), "lock")):
                try:
                    total += os.stat(path).st_size
                except FileNotFoundError:
                    pass
            else:
                unlink(path)  # its download died (the kernel dropped its lock)
        return total

    def _make_room(self, incoming: int, keep: tuple = ()) -> bool:
        """Evict unheld LRU entries until ``incoming`` more bytes fit; call under the evict lock."""
        entries = self.entries()
        total = sum(e.size for e in entries) + self._pending_bytes() + incoming
        for e in entries:
            if total <= self.max_bytes:
                break
            if e.key in keep:
                continue
            if self._remove_unheld(e.key):
                total -= e.size
        return total <= self.max_bytes

    def evict(self, incoming: int = 0, keep: tuple = ()) -> bool:
        """Remove least recently used entries not in use until ``total + incoming <= max_bytes``;
        False when entries in use keep the total above the cap."""
        with Flock(os.path.join(self.dir, EVICT_LOCK)):
            return self._make_room(incoming, keep)

    def _remove(self, key: str) -> None:
        unlink(self._p(key, "data"))
        unlink(self._p(key, "json"))
        unlink(self._p(key, "ok"))

    def _remove_unheld(self, key: str) -> bool:
        """Remove an entry unless a reader holds it (its space would not come back)."""
        path = self._p(key, "data")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            unlink(self._p(key, "json"))
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            self._remove(key)
        finally:
            os.close(fd)
        return True

    def discard(self, data_path: str) -> bool:
        """Drop the entry whose data file is ``data_path`` (its bytes proved wrong); readers
        holding it keep their descriptors.  False if it is not an entry of this cache."""
        folder, name = os.path.split(os.path.abspath(data_path))
        if folder != os.path.abspath(self.dir) or not name.endswith(".data"):
            return False
        self._remove(name[:-len(".data")])
        self.corrupt += 1
        return True

    def remove(self, url: str) -> int:
        """Drop every cached version of ``url``; returns how many were removed."""
        prefix = self._url_prefix(url)
        n = 0
        for e in self.entries():
            if e.key.startswith(prefix):
                self._remove(e.key)
                n += 1
        return n

    def clear(self) -> int:
        """Remove all entries and leftover temp files (only files the cache made)."""
        n = 0
        for e in self.entries():
            self._remove(e.key)
            n += 1
        for name in os.listdir(self.dir):
            if not OWN_FILE.match(name) or name.endswith((".data", ".lock")):
                continue
            key = name.split(".")[0]
            try:  # a key being downloaded right now keeps its temp and metadata files
                with Flock(self._p(key, "lock"), blocking=False):
                    if ".tmp" in name or name.endswith((".part", ".want", ".bad")) or \
                            not os.path.exists(self._p(key, "data")):
                        unlink(os.path.join(self.dir, name))
            except BlockingIOError:
                pass
        for name in os.listdir(self.dir):  # lock files of keys no longer present
            if OWN_FILE.match(name) and name.endswith(".lock") and \
                    not os.path.exists(os.path.join(self.dir, name[:-5] + ".data")):
                if not lock_file_in_use(os.path.join(self.dir, name)):
                    unlink(os.path.join(self.dir, name))
        return n

    def verify(self) -> Tuple[List[CacheEntry], List[CacheEntry]]:
        """Check every entry's CRC32 now; damaged ones are dropped.  Returns (good, bad)."""
        good, bad = [], []
        for e in self.entries():
            try:
                got = crc32_file(e.path)
            except FileNotFoundError:
                continue
            if e.crc32 is not None and got == e.crc32:
                good.append(e)
            else:
                bad.append(e)
                self.corrupt += 1
                if not self.read_only:
                    self._remove(e.key)
        return good, bad
