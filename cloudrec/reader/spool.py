"""A node's shared-memory spool: a scattered epoch read once without a cache.

Without a cache, a ``global`` (or ``mxnet``) order split over several DataLoader
workers has two bad ways to read: ranges whose merged gaps are the other
workers' records (read twice over the node: ~1.7x the bytes on a small
dataset), or, with the gaps capped (``uncached_max_waste``, the object-store
default), about one GET per record.  When the whole dataset fits in the memory
the workers' read-ahead may use anyway (``readahead_bytes`` x workers) and in
free shared memory, the workers instead share one download of each shard into a
private folder under ``/dev/shm`` (the node-shared :class:`ShardCache`
machinery: one download per shard, records served while it streams in): every
byte crosses the network once, at a few GETs per shard.

The folder is not a cache: it belongs to the dataset object that named it and
is removed when that object is freed or its process exits; folders whose owner
died without removing them are swept by the next spool made on the node (in the
same pid namespace: a container cannot see another's processes).
``FetchOptions(spool=False)`` (``fetch_options={"spool": False}``) turns it off.
"""
from __future__ import annotations

import os
import secrets
import shutil
import weakref
from typing import Any, Dict, Optional

from cloudrec.processes import pid_alive, pid_namespace
from cloudrec.reader.cached import is_local

ENV_ROOT = "CLOUDREC_SPOOL_ROOT"
DEFAULT_ROOT = "/dev/shm/cloudrec-spool"
#: orders whose workers' records interleave in every shard (block/shard/none orders
#: give each worker runs of its own, which the fetcher reads without waste)
SCATTERED_MODES = ("global", "mxnet")
HEADROOM = 64 << 20   # shared memory left free for torch's own tensors and batch files


def fits_read_ahead(total: int, readahead: int, num_workers: int) -> bool:
    """Whether ``num_workers`` workers share a spool of ``total`` bytes: two or more, and
    the dataset within the memory their read-ahead may use anyway."""
    return num_workers >= 2 and total <= readahead * num_workers


def spool_root() -> str:
    """``$CLOUDREC_SPOOL_ROOT``, else ``/dev/shm/cloudrec-spool``."""
    return os.environ.get(ENV_ROOT) or DEFAULT_ROOT


def folder_name(pid: int, token: str) -> str:
    """``<pid>-<pid namespace>-<token>``: the owner is known from the name alone."""
    return f"{pid}-{pid_namespace()}-{token}"


def sweep(root: str) -> int:
    """Remove spool folders under ``root`` whose owner process is gone; how many."""
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    swept, ns = 0, pid_namespace()
    for name in names:
        parts = name.split("-")
        if len(parts) != 3 or parts[1] != ns or not parts[0].isdigit():
            continue      # not a spool, or another pid namespace's
        pid = int(parts[0])
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            swept += 1
    return swept


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:    # never from a forked worker: the owner still reads it
        shutil.rmtree(path, ignore_errors=True)


def _free_bytes(root: str) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


class Spool:
    """The spool one dataset object may use; decided in the process that made it.

    ``eligible`` is settled here, once (so every worker of the node decides
    alike); :meth:`folder` adds the per-worker conditions.  ``reason`` says why
    a spool is not used.
    """

    def __init__(self, owner: Any, ds: Any, *, mode: str, world_size: int,
                 fetch_kw: Dict[str, Any], enabled: bool = True,
                 root: Optional[str] = None) -> None:
        self.root = os.path.abspath(root or spool_root())
        self.path = os.path.join(self.root, folder_name(os.getpid(), secrets.token_hex(6)))
        self.total = sum(int(s.size) for s in getattr(ds, "shards", []))
        self.readahead = int(fetch_kw.get("readahead_bytes") or 0)
        self.reason = self._why_not(ds, enabled, mode, world_size, fetch_kw)
        if self.reason is None:
            sweep(self.root)
            weakref.finalize(owner, _remove, self.path, os.getpid())

    @property
    def eligible(self) -> bool:
        return self.reason is None

    def _why_not(self, ds: Any, enabled: bool, mode: str, world_size: int,
                 fetch_kw: Dict[str, Any]) -> Optional[str]:
        if not enabled:
            return "turned off (spool=False)"
        if fetch_kw.get("cache", "none") != "none":
            return "a cache is in use"
        if mode not in SCATTERED_MODES:
            return f"order {mode!r} gives each worker runs of its own"
        if world_size != 1:
            return "several ranks (each node would download the whole dataset)"
        shards = getattr(ds, "shards", None) or []
        if not shards:
            return "no shards of its own (the records come through another reader)"
        if any(is_local(ds.filesystem(i)[0]) for i in range(len(shards))):
            return "local shards"
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:   # no /dev/shm (macOS), another user's folder
            return f"cannot use {self.root}: {exc.strerror or exc}"
        if self.total + HEADROOM > _free_bytes(self.root):
            return f"{self.total} bytes do not fit in the free shared memory of {self.root}"
        return None

    def folder(self, num_workers: int) -> Optional[str]:
        """The folder this worker's fetcher caches into, or None (ranged reads)."""
        if not self.eligible or not fits_read_ahead(self.total, self.readahead, num_workers):
            return None
        return self.path

    def fetch_kw(self, num_workers: int) -> Dict[str, Any]:
        """RecordFetcher keywords that read through the spool (empty: read as asked)."""
        path = self.folder(num_workers)
        if path is None:
            return {}
        # room for every shard: nothing is evicted within the spool's life
        return {"cache": "shards", "cache_dir": path, "cache_max_bytes": self.total + (1 << 20)}

    def __repr__(self) -> str:
        state = "eligible" if self.eligible else f"off: {self.reason}"
        return f"Spool({self.path!r}, {self.total} bytes, {state})"
