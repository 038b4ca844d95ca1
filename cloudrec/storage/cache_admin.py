"""The shard cache's maintenance commands (``cloudrec cache clear/verify`` and removal by
URL): a mixin of :class:`cloudrec.storage.cache.ShardCache`, kept apart from the read path.
Each touches only files the cache made, and leaves alone what a live download holds."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, Tuple

from cloudrec.storage.cache_files import OWN_FILE, Flock, crc32_file, lock_file_in_use, unlink

if TYPE_CHECKING:
    from cloudrec.storage.cache import CacheEntry

__all__ = ["CacheMaintenance"]


class CacheMaintenance:
    """``remove``, ``clear`` and ``verify`` over ShardCache's entries and files."""

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
                    if ".tmp" in name or name.endswith((".part", ".want")) or \
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
