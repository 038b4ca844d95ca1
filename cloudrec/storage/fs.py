"""Turn any URL (local path, file://, s3://, hdfs://, webhdfs://, http(s)://,
memory://, ...) into an fsspec filesystem and a path, in one place."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import fsspec
from fsspec.core import url_to_fs


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
            fs = cls(**opts)
            return fs, parts.path or "/"
    return url_to_fs(url, **opts)


def join_url(base: str, name: str) -> str:
    """Join a file name onto a folder URL without touching its protocol."""
    return base.rstrip("/") + "/" + name.lstrip("/")


def strip_protocol(url: str) -> str:
    """The path part of a URL, as fsspec would address it."""
    fs, path = resolve(url)
    return path
