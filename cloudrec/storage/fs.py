"""Turn any URL (local path, file://, s3://, hdfs://, webhdfs://, http(s)://,
memory://, ...) into an fsspec filesystem and a path, in one place."""
from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, Tuple

import fsspec
from fsspec.core import url_to_fs

# ---- fork safety -----------------------------------------------------------------------
# After fork, fsspec clears its instance caches in the child.  Dropping the
# last reference to an hdfs-native filesystem there runs its Rust destructor,
# which waits forever on a tokio runtime whose threads did not survive the
# fork (and an s3fs instance spends ~1 s trying to close its session on a dead
# event loop).  So the parent hands the child a strong reference to every
# filesystem instance alive at fork time: the child never destroys them and
# builds fresh ones on first use.  DataLoader workers forked from a process
# that used hdfs:// or s3:// therefore start promptly instead of hanging.
_tracked: "weakref.WeakSet[Any]" = weakref.WeakSet()
_fork_keepalive: List[Any] = []
# forks in progress: two threads forking at once (e.g. two DataLoaders started from
# threads) must not let the first one's after-fork hook drop the second child's keep-alive
_forking = 0
_fork_lock = threading.Lock()


def _instances_alive() -> List[Any]:
    alive = list(_tracked)
    try:
        from fsspec.spec import _registered_classes  # type: ignore[attr-defined]
        for cls in list(_registered_classes):
            alive.extend(list(getattr(cls, "_cache", {}).values()))
    except ImportError:
        pass
    return alive


def _before_fork() -> None:
    global _forking
    with _fork_lock:
        _forking += 1
        _fork_keepalive.extend(_instances_alive())


def _after_fork_in_parent() -> None:
    global _forking
    with _fork_lock:
        _forking -= 1
        if _forking == 0:
            _fork_keepalive.clear()


def _after_fork_in_child() -> None:
    # the child keeps its copy of the keep-alive list; another thread of the parent may
    # have held the lock at fork time, so the child gets a fresh one
    global _forking, _fork_lock
    _forking = 0
    _fork_lock = threading.Lock()


# hdfs-native runs every call on one process-wide tokio runtime; its threads do
# not survive fork, so any hdfs:// call in a forked child would block forever.
_hdfs_native_pid: Optional[int] = None

HDFS_FORK_MESSAGE = (
    "hdfs-native was used in the parent process and its I/O threads do not survive fork(); "
    "start workers with the 'spawn' or 'forkserver' method (for PyTorch: "
    "DataLoader(..., multiprocessing_context='spawn')) or read through webhdfs://")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _hdfs_native_class():
    """hdfs-native's fsspec filesystem (Rust client, no JVM), if installed."""
    try:
        from hdfs_native.fsspec import HdfsFileSystem  # type: ignore
    except ImportError:
        return None
    return HdfsFileSystem


def resolve(url: str, storage_options: Optional[Dict[str, Any]] = None
            ) -> Tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL.

    ``hdfs://`` goes to hdfs-native when it is installed (pyarrow's HDFS needs
    a libhdfs.so that pip cannot provide); plain paths are local.
    """
    url = os.fspath(url)
    if storage_options is not None and not isinstance(storage_options, Mapping):
        from cloudrec.errors import StorageError  # e.g. --storage-options '[1]'
        raise StorageError("storage options must be a dict (a JSON object), got "
                           f"{type(storage_options).__name__}", url)
    opts = dict(storage_options or {})
    if url.startswith(("hdfs://", "viewfs://")):
        cls = _hdfs_native_class()
        if cls is not None:
            from urllib.parse import urlsplit
            parts = urlsplit(url)
            if parts.hostname and "host" not in opts:
                opts["host"] = parts.hostname
            if parts.port and "port" not in opts:
                opts["port"] = parts.port
            global _hdfs_native_pid
            if _hdfs_native_pid is not None and _hdfs_native_pid != os.getpid():
                from cloudrec.errors import StorageError
                raise StorageError(HDFS_FORK_MESSAGE, url)
            _hdfs_native_pid = os.getpid()
            fs = cls(**opts)
            _tracked.add(fs)
            return fs, parts.path or "/"
    if url.startswith(("s3://", "s3a://")):
        from cloudrec.storage.boto_share import share_loaders
        from cloudrec.storage.ssl_share import share_ssl_contexts
        share_loaders()       # forked workers inherit the parsed S3 service model
        share_ssl_contexts()  # ... and the TLS context with its CA bundle loaded
    fs, path = url_to_fs(url, **opts)
    _tracked.add(fs)
    return fs, path


def join_url(base: str, name: str) -> str:
    """Join a file name onto a folder URL without touching its protocol."""
    return base.rstrip("/") + "/" + name.lstrip("/")


def strip_protocol(url: str) -> str:
    """The path part of a URL, as fsspec would address it."""
    fs, path = resolve(url)
    return path
