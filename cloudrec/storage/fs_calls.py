"""Calling a filesystem method under cloudrec's retry policy alone.

s3fs retries inside (two nested loops of 5 attempts with sleeps) and botocore
adds its own, so a read could take minutes before :class:`RetryPolicy` saw a
failure.  :func:`call_fs` runs ``fs.<method>`` (on async filesystems each
attempt on the filesystem's loop, cut off after ``retry.timeout``) on a
private copy of the filesystem whose client retries are off
(:func:`_without_client_retries`, memoised per process and filesystem token);
:class:`cloudrec.storage.ranged.RangeReader` reads through the same copies.
"""
from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Dict, Optional, Tuple

import fsspec

from cloudrec.storage.fork_locks import renew_in_child
from cloudrec.storage.retry import RetryPolicy


def call_fs(fs: fsspec.AbstractFileSystem, method: str, *args: Any,
            retry: Optional[RetryPolicy] = None, url: str = "", **kwargs: Any) -> Any:
    """``fs.<method>(*args)`` (e.g. ``info``, ``cat_file``) with the retry policy.

    On async filesystems each attempt runs ``_<method>`` on the filesystem's
    loop and is cut off after ``retry.timeout`` seconds.
    """
    retry = retry or RetryPolicy()
    if getattr(fs, "async_impl", False) and getattr(fs, "loop", None) is not None \
            and hasattr(fs, "_" + method):
        fs = _without_client_retries(fs)
        coro_fn = getattr(fs, "_" + method)

        async def run() -> Any:
            return await retry.acall(lambda: coro_fn(*args, **kwargs), url or str(args[0]))
        return asyncio.run_coroutine_threadsafe(run(), fs.loop).result()
    fn = getattr(fs, method)
    return retry.call(lambda: fn(*args, **kwargs), url or str(args[0]))


_CLONES: Dict[Tuple[int, str], fsspec.AbstractFileSystem] = {}
_CLONES_LOCK = threading.Lock()
renew_in_child(__name__, "_CLONES_LOCK")  # a cache download may hold it at a fork


def _without_client_retries(fs: fsspec.AbstractFileSystem) -> fsspec.AbstractFileSystem:
    """Memoised (per process and filesystem token) :func:`_make_retry_free`."""
    key = (os.getpid(), str(getattr(fs, "_fs_token", id(fs))))
    with _CLONES_LOCK:
        clone = _CLONES.get(key)
        if clone is None:
            clone = _CLONES[key] = _make_retry_free(fs)
    return clone


def _make_retry_free(fs: fsspec.AbstractFileSystem) -> fsspec.AbstractFileSystem:
    """A private copy of ``fs`` with the client's own retries off (s3fs nests two
    loops of 5 attempts with sleeps, botocore adds its own), so that
    :class:`RetryPolicy` alone bounds attempts and the time they take."""
    retries = getattr(fs, "retries", None)
    if not isinstance(retries, int):
        return fs
    opts = dict(fs.storage_options)
    if type(fs).__module__.startswith("s3fs"):
        config = dict(opts.get("config_kwargs") or {})
        config["retries"] = {"total_max_attempts": 1, "mode": "standard"}
        opts["config_kwargs"] = config
    try:
        clone = type(fs)(skip_instance_cache=True, **opts)
    except Exception:  # noqa: BLE001 - keep the shared instance rather than fail
        return fs
    clone.retries = 1
    return clone
