"""A fresh empty folder on one storage backend, addressed by URL (for tests).

``Store.url(rel)`` gives the full URL to hand to cloudrec; ``put``/``get``
write and read raw bytes through fsspec directly (not through cloudrec's
reader), so a test can check what cloudrec wrote or plant what it reads.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Dict, List, Optional

from cloudrec.storage.fs import join_url, resolve


class Store:
    """A folder URL plus its storage options: ``name`` is local, s3 or hdfs."""

    def __init__(self, name: str, base_url: str, storage_options: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.storage_options: Dict[str, Any] = dict(storage_options or {})
        self._fs = None

    def __repr__(self) -> str:
        return f"Store({self.name!r}, {self.base_url!r})"

    @property
    def fs(self):
        """The fsspec filesystem behind ``base_url``."""
        if self._fs is None:
            self._fs, _ = resolve(self.base_url, self.storage_options)
        return self._fs

    def url(self, relpath: str = "") -> str:
        """Full URL of ``relpath`` inside this folder."""
        return join_url(self.base_url, relpath) if relpath else self.base_url

    def path(self, relpath: str = "") -> str:
        """The fsspec path (no protocol) of ``relpath``."""
        return resolve(self.url(relpath), self.storage_options)[1]

    def put(self, relpath: str, data: bytes) -> str:
        """Write ``data`` at ``relpath`` (parents created) and return its URL."""
        path = self.path(relpath)
        if self.name != "s3":
            parent = path.rsplit("/", 1)[0]
            if parent:
                self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(path, "wb") as fh:
            fh.write(bytes(data))
        return self.url(relpath)

    def get(self, relpath: str) -> bytes:
        """All bytes at ``relpath``."""
        with self.fs.open(self.path(relpath), "rb") as fh:
            return fh.read()

    def exists(self, relpath: str) -> bool:
        return bool(self.fs.exists(self.path(relpath)))

    def listdir(self, relpath: str = "") -> List[str]:
        """Names directly inside ``relpath`` (sorted)."""
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self.path(relpath), detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)


def local_store(folder: Any) -> Store:
    """``folder`` on local disk (created), addressed as a plain path."""
    os.makedirs(folder, exist_ok=True)
    return Store("local", os.fspath(folder), {})


def s3_store(server: Any) -> Store:
    """A fresh bucket on ``server`` (a MotoServer)."""
    return Store("s3", server.new_bucket(), server.storage_options)


def hdfs_store(server: Any, via: str = "hdfs") -> Store:
    """A fresh folder on ``server`` (an HdfsCluster), as ``hdfs://`` or ``webhdfs://``."""
    root = server.url if via == "hdfs" else server.webhdfs_url
    opts = server.storage_options if via == "hdfs" else server.webhdfs_storage_options
    store = Store(via, f"{root}/cloudrec-test/{uuid.uuid4().hex[:12]}", opts)
    store.fs.makedirs(store.path(), exist_ok=True)
    return store
