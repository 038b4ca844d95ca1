"""Writes that cannot hang: every call to a remote file has a time limit.

A frozen object store (accepts the connection, never answers) makes a plain
``fs.open(path, "wb").write/close`` wait for the client's socket timeouts
times its retries times the filesystem's own retries: 25 minutes with
botocore's defaults.  :func:`open_output` returns a file whose ``write``,
``flush`` and ``close`` each run on a helper thread and give up after
``timeout`` seconds with a :class:`WriteTimeoutError` naming the URL (the
helper thread is a daemon, so the process can still exit); any other failure
is a :class:`StorageError` naming the URL.  Local files are written directly
(only the error mapping applies).

Use it for every output: ``MXRecordIO(..., 'w')``, im2rec's shards and
``.idx``/manifest objects (``write_bytes`` for a whole object at once).
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Dict, Optional, TypeVar

from cloudrec.errors import CloudrecError, StorageError
from cloudrec.storage.fs import resolve

T = TypeVar("T")
ENV_TIMEOUT = "CLOUDREC_WRITE_TIMEOUT"
DEFAULT_WRITE_TIMEOUT = 120.0


class WriteTimeoutError(StorageError, TimeoutError):
    """A write, flush or close got no answer within the write timeout."""


def default_write_timeout() -> float:
    """``$CLOUDREC_WRITE_TIMEOUT`` seconds, else 120 (one call: up to a whole part upload)."""
    try:
        return float(os.environ.get(ENV_TIMEOUT, DEFAULT_WRITE_TIMEOUT))
    except ValueError:
        return DEFAULT_WRITE_TIMEOUT


class _Watchdog:
    """One daemon thread running calls handed to it; the caller waits at most ``timeout``."""

    def __init__(self, name: str) -> None:
        self._q: "queue.Queue[Any]" = queue.Queue()
        self._t = threading.Thread(target=self._run, name=name, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc
            done.set()

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        box: Dict[str, Any] = {}
        done = threading.Event()
        self._q.put((fn, box, done))
        if not done.wait(timeout):
            raise TimeoutError
        if "error" in box:
            raise box["error"]
        return box["value"]

    def stop(self) -> None:
        self._q.put(None)


class BoundedWriter:
    """A binary output file whose calls are time-limited (see the module docstring)."""

    def __init__(self, url: str, storage_options: Optional[Dict[str, Any]] = None, *,
                 timeout: Optional[float] = None, mode: str = "wb") -> None:
        self.url = os.fspath(url)
        self.timeout = float(timeout if timeout is not None else default_write_timeout())
        self._broken: Optional[BaseException] = None
        self.closed = False
        fs, path = self._guard(lambda: resolve(self.url, storage_options), "resolving the URL")
        self._remote = not _is_local(fs)
        self._dog = _Watchdog("cloudrec-write") if self._remote else None
        if not self._remote:
            parent = os.path.dirname(path)
            if parent:
                self._guard(lambda: os.makedirs(parent, exist_ok=True), "creating the folder")
        self._fh = self._call(lambda: fs.open(path, mode), "opening the file")

    def __repr__(self) -> str:
        from cloudrec.storage.redact import redact_url
        return f"BoundedWriter({redact_url(self.url)!r}, timeout={self.timeout})"

    # -- the time limit and the error mapping ------------------------------------------
    def _guard(self, fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except CloudrecError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a StorageError
            raise StorageError(f"write failed while {what}: {type(exc).__name__}: {exc}",
                               self.url) from exc

    def _call(self, fn: Callable[[], T], what: str) -> T:
        if self._broken is not None:
            raise StorageError(f"write failed earlier ({self._broken}); the output is incomplete",
                               self.url)
        if self._dog is None:
            return self._guard(fn, what)
        try:
            return self._guard(lambda: self._dog.call(fn, self.timeout), what)  # type: ignore[union-attr]
        except StorageError as exc:
            if isinstance(exc.__cause__, TimeoutError) and \
                    not isinstance(exc.__cause__, CloudrecError):
                err = WriteTimeoutError(f"write timed out: no answer within {self.timeout:g} s "
                                        f"while {what}; is the storage endpoint reachable?",
                                        self.url)
                self._broken = err
                raise err from None
            self._broken = exc
            raise

    # -- file interface ------------------------------------------------------------------
    def write(self, data: bytes) -> int:
        n = self._call(lambda: self._fh.write(data), "writing")
        return len(data) if n is None else n

    def flush(self) -> None:
        self._call(self._fh.flush, "flushing")

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        """Finish the upload (e.g. complete a multipart upload); a failure leaves no object."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._broken is None:
                self._call(self._fh.close, "finishing the upload")
        finally:
            if self._dog is not None:
                self._dog.stop()

    def __enter__(self) -> "BoundedWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_output(url: str, storage_options: Optional[Dict[str, Any]] = None, *,
                timeout: Optional[float] = None) -> BoundedWriter:
    """Open ``url`` for writing with time-limited calls (see the module docstring)."""
    return BoundedWriter(url, storage_options, timeout=timeout)


def write_bytes(url: str, data: bytes, storage_options: Optional[Dict[str, Any]] = None, *,
                timeout: Optional[float] = None) -> None:
    """Write a whole object in one call, within ``timeout`` seconds (default 120)."""
    with open_output(url, storage_options, timeout=timeout) as fh:
        fh.write(data)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem
    return isinstance(fs, LocalFileSystem)
