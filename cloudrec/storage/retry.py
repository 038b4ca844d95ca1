"""Bounded retries with exponential backoff and jitter for ranged reads.

Object stores fail transiently (503 SlowDown, 500, dropped connections, stalls,
bodies cut short).  A loader must retry those a bounded number of times and
then fail loudly, naming the URL and byte range; it must never pass on a short
body.  Permanent errors (not found, access denied, bad arguments) are raised at
once.
"""
from __future__ import annotations

import asyncio
import errno
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, TypeVar

from cloudrec.errors import StorageError

T = TypeVar("T")

_TRANSIENT_WORDS = (
    "slowdown", "slow down", "reduce your request rate", "internalerror", "internal error",
    "service unavailable", "serviceunavailable", "throttl", "requesttimeout", "timed out",
    "timeout", "connection reset", "connection aborted", "connection closed",
    "server disconnected", "serverdisconnected", "broken pipe", "incompleteread",
    "incomplete read", "payload", "not enough data", "response ended prematurely",
    "responsestreamingerror", "endpoint connection", "connection was closed",
    "could not connect to the endpoint", "connection refused", "connect timeout",
    "503", "500", "502", "504",
)
_TRANSIENT_TYPES = ("Payload", "ContentLength", "IncompleteRead", "Disconnected",
                    "ConnectionClosed", "ResponseStreaming", "Timeout", "ProtocolError",
                    "EndpointConnection", "ConnectionRefused", "ClientConnector",
                    "ConnectTimeout", "ConnectionError",
                    "FlexibleChecksum")   # botocore: the bytes differ from the stored checksum
_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.EPIPE,
                     errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.EHOSTUNREACH, errno.ENETUNREACH}


class ShortReadError(StorageError):
    """A read returned fewer (or more) bytes than the range asked for."""


class ObjectChangedError(StorageError):
    """The object's ETag is not the one seen when the dataset was opened (it was replaced):
    its bytes no longer match the record table, so the read is refused (never retried)."""


class ReadTimeoutError(StorageError, TimeoutError):
    """One request took longer than the per-request timeout."""


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` looks like a failure that a retry may cure.

    Not-found and permission errors are permanent; timeouts, short reads,
    connection errors and 5xx/SlowDown answers (recognised by type, errno or
    message, because each client library wraps them differently) are transient.
    """
    if isinstance(exc, ObjectChangedError):
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                        NotADirectoryError, ValueError, TypeError, KeyError)):
        # aiohttp's payload errors subclass none of these; IncompleteRead is ValueError-free
        if not isinstance(exc, ShortReadError):
            return False
    if isinstance(exc, (ShortReadError, ReadTimeoutError, TimeoutError, asyncio.TimeoutError,
                        ConnectionError, EOFError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    name = type(exc).__name__
    if any(w in name for w in _TRANSIENT_TYPES):  # body cut short, connection lost
        return True
    status = _status_code(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    name = type(exc).__name__.lower()
    text = f"{name} {exc}".lower()
    if any(w in text for w in ("nosuchbucket", "nosuchkey", "accessdenied", "forbidden", "403", "404")):
        return False
    return any(w in text for w in _TRANSIENT_WORDS)


def _status_code(exc: BaseException) -> Optional[int]:
    """HTTP status carried by botocore/aiohttp/fsspec-http errors, if any."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    for attr in ("status", "status_code", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and isinstance(cause, BaseException):
        inner = getattr(cause, "response", None)
        if isinstance(inner, dict):
            code = inner.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(code, int):
                return code
    return None


@dataclass
class RetryPolicy:
    """How to retry one ranged read.

    ``max_attempts`` tries in all; the n-th retry waits a random time in
    ``[cap/2, cap]`` with ``cap = min(max_delay, base_delay * 2**n)`` ("equal
    jitter": spread out, yet the waits of the default policy add up to at
    least 4.5 s, so an endpoint that refuses connections for a few seconds
    is ridden out).  ``timeout`` is the limit for one request in seconds
    (enforced for async filesystems, and by a watchdog thread for sync ones).
    ``max_elapsed`` bounds the whole call: no retry starts later than
    ``max_elapsed`` seconds after the first attempt, so the call ends within
    ``max_elapsed + timeout`` (a stalled endpoint fails in at most 2 minutes
    with the defaults, whatever ``max_attempts`` says).

    ``retries`` and ``failures`` count, for everything this policy object ran,
    the retries made and the calls that failed for good (a fetcher's
    ``stats``).
    """

    max_attempts: int = 10
    base_delay: float = 0.05
    max_delay: float = 2.0
    timeout: float = 30.0
    seed: Optional[int] = None
    max_elapsed: float = 90.0
    _rng: random.Random = field(default=None, init=False, repr=False, compare=False)  # type: ignore

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._rng = random.Random(self.seed)
        self._count_lock = threading.Lock()
        self.retries = 0
        self.failures = 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_count_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._count_lock = threading.Lock()
        self.__dict__.setdefault("retries", 0)
        self.__dict__.setdefault("failures", 0)

    def copy(self) -> "RetryPolicy":
        """The same settings with fresh counters (and a fresh RNG from the same seed)."""
        return RetryPolicy(self.max_attempts, self.base_delay, self.max_delay, self.timeout,
                           self.seed, self.max_elapsed)

    def delays(self) -> Iterator[float]:
        """The waits before attempt 2, 3, ... (``max_attempts - 1`` of them)."""
        for n in range(self.max_attempts - 1):
            cap = min(self.max_delay, self.base_delay * (2 ** n))
            yield self._rng.uniform(cap / 2, cap)

    def _next_wait(self, delays: Iterator[float], t0: float) -> Optional[float]:
        """The wait before the next attempt, or None when attempts or time are used up."""
        wait = next(delays, None)
        if wait is None or time.monotonic() - t0 + wait > self.max_elapsed:
            with self._count_lock:
                self.failures += 1
            return None
        with self._count_lock:
            self.retries += 1
        return wait

    def _fail(self, exc: BaseException, url: str, start: Optional[int], end: Optional[int],
              attempts: int, t0: float) -> StorageError:
        kind = "timed out" if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) else "failed"
        took = time.monotonic() - t0
        return StorageError(f"read {kind} after {attempts} attempt(s) in {took:.1f} s: "
                            f"{type(exc).__name__}: {exc}", url, start, end)

    def call(self, fn: Callable[[], T], url: str, start: Optional[int] = None,
             end: Optional[int] = None) -> T:
        """Run ``fn()`` with retries; raise StorageError naming the URL and range at the end."""
        delays = self.delays()
        attempt = 0
        t0 = time.monotonic()
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below
                if isinstance(exc, StorageError) and not isinstance(exc, (ShortReadError,
                                                                          ReadTimeoutError)):
                    raise
                if not is_transient(exc):
                    raise _permanent(exc, url, start, end) from exc
                wait = self._next_wait(delays, t0)
                if wait is None:
                    raise self._fail(exc, url, start, end, attempt, t0) from exc
            time.sleep(wait)

    async def acall(self, make_coro: Callable[[], "asyncio.Future"], url: str,
                    start: Optional[int] = None, end: Optional[int] = None):
        """Async twin of :meth:`call`; each attempt is cut off after ``timeout`` seconds."""
        delays = self.delays()
        attempt = 0
        t0 = time.monotonic()
        while True:
            attempt += 1
            try:
                return await asyncio.wait_for(make_coro(), self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, asyncio.TimeoutError):
                    exc = ReadTimeoutError(f"no answer within {self.timeout} s", url, start, end)
                elif isinstance(exc, StorageError) and not isinstance(exc, ShortReadError):
                    raise
                if not is_transient(exc):
                    raise _permanent(exc, url, start, end) from exc
                wait = self._next_wait(delays, t0)
                if wait is None:
                    raise self._fail(exc, url, start, end, attempt, t0) from exc
            await asyncio.sleep(wait)


def _permanent(exc: BaseException, url: str, start: Optional[int], end: Optional[int]
               ) -> BaseException:
    """A clear cloudrec error for a non-retryable failure (keeps FileNotFoundError's type)."""
    from cloudrec.errors import StorageError as SE
    if isinstance(exc, FileNotFoundError):
        return StorageNotFound(f"not found: {exc}", url, start, end)
    if isinstance(exc, PermissionError) or "accessdenied" in str(exc).lower().replace(" ", ""):
        return SE(f"access denied: {exc}", url, start, end)
    return SE(f"read failed: {type(exc).__name__}: {exc}", url, start, end)


class StorageNotFound(StorageError, FileNotFoundError):
    """The object (or its bucket) does not exist."""


def check_length(data: bytes, url: str, start: int, end: int) -> bytes:
    """Return ``data`` if it holds exactly ``end - start`` bytes, else raise ShortReadError."""
    if len(data) != end - start:
        raise ShortReadError(f"got {len(data)} of {end - start} bytes", url, start, end)
    return data
