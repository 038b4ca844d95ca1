"""RetryPolicy and error classification: bounded attempts, backoff with jitter,
short bodies never passed on, permanent errors raised at once with the URL."""
import asyncio
import errno
import time

import pytest

from cloudrec.errors import StorageError
from cloudrec.storage.retry import (ReadTimeoutError, RetryPolicy, ShortReadError,
                                    StorageNotFound, check_length, is_transient)


def _client_error(code, status):
    from botocore.exceptions import ClientError
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def test_classification_of_real_client_errors():
    assert is_transient(_client_error("SlowDown", 503))
    assert is_transient(_client_error("InternalError", 500))
    assert not is_transient(_client_error("AccessDenied", 403))
    assert not is_transient(_client_error("NoSuchKey", 404))
    assert is_transient(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert is_transient(OSError(errno.EBUSY, "Please reduce your request rate."))
    assert is_transient(asyncio.TimeoutError())
    assert is_transient(ShortReadError("short", "u", 0, 1))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(PermissionError("x"))
    from aiohttp import ClientPayloadError, ServerDisconnectedError
    assert is_transient(ClientPayloadError("Response payload is not completed"))
    assert is_transient(ServerDisconnectedError())


def test_delays_are_bounded_jittered_and_seeded():
    p = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.5, seed=3)
    d = list(p.delays())
    assert len(d) == 9
    assert all(0 <= x <= min(0.5, 0.1 * 2 ** i) for i, x in enumerate(d))
    assert len(set(d)) == 9  # jitter, not a fixed schedule
    assert list(RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.5, seed=3).delays()) == d
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_transient_errors_are_retried_until_success():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionResetError(errno.ECONNRESET, "reset by peer")
        return b"ok"
    p = RetryPolicy(max_attempts=5, base_delay=0.001, max_delay=0.002)
    assert p.call(flaky, "s3://b/k", 10, 20) == b"ok" and len(calls) == 4


def test_bounded_attempts_then_error_naming_url_and_range():
    calls = []

    def always():
        calls.append(1)
        raise _client_error("SlowDown", 503)
    p = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
    with pytest.raises(StorageError) as ei:
        p.call(always, "s3://b/k.rec", 100, 250)
    assert len(calls) == 3
    e = ei.value
    assert (e.url, e.start, e.end) == ("s3://b/k.rec", 100, 250)
    assert "s3://b/k.rec bytes [100, 250)" in str(e) and "3 attempt(s)" in str(e)


def test_permanent_errors_are_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("no such key")
    p = RetryPolicy(max_attempts=5, base_delay=0.001)
    with pytest.raises(StorageNotFound, match="s3://b/gone"):
        p.call(missing, "s3://b/gone", 0, 10)
    assert len(calls) == 1

    def denied():
        calls.append(1)
        raise _client_error("AccessDenied", 403)
    with pytest.raises(StorageError, match="access denied.*s3://b/secret"):
        p.call(denied, "s3://b/secret", 0, 10)
    assert len(calls) == 2


def test_short_body_detected_and_retried():
    assert check_length(b"abcd", "u", 4, 8) == b"abcd"
    with pytest.raises(ShortReadError, match=r"got 3 of 4 bytes \(u bytes \[4, 8\)\)"):
        check_length(b"abc", "u", 4, 8)
    bodies = [b"ab", b"abc", b"abcd"]
    p = RetryPolicy(max_attempts=5, base_delay=0.001)
    assert p.call(lambda: check_length(bodies.pop(0), "u", 0, 4), "u", 0, 4) == b"abcd"
    with pytest.raises(StorageError, match="got 2 of 4"):
        RetryPolicy(max_attempts=2, base_delay=0.001).call(
            lambda: check_length(b"ab", "u", 0, 4), "u", 0, 4)


def test_async_timeout_cuts_a_stalled_attempt():
    attempts = []

    async def stall_then_answer():
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(10)
        return b"data"
    p = RetryPolicy(max_attempts=3, base_delay=0.001, timeout=0.2)
    t0 = time.perf_counter()
    assert asyncio.run(p.acall(stall_then_answer, "s3://b/k", 0, 4)) == b"data"
    assert time.perf_counter() - t0 < 2 and len(attempts) == 2

    async def always_stall():
        await asyncio.sleep(10)
    with pytest.raises(StorageError, match=r"timed out after 2 attempt\(s\).*s3://b/k bytes \[0, 4\)"):
        asyncio.run(RetryPolicy(max_attempts=2, base_delay=0.001, timeout=0.1).acall(
            always_stall, "s3://b/k", 0, 4))


def test_sync_reader_abandons_a_stalled_attempt():
    """A sync filesystem without socket timeouts: the reader cuts the attempt off."""
    import threading
    from fsspec.implementations.memory import MemoryFileSystem
    from cloudrec.storage.ranged import RangeReader

    release = threading.Event()

    class StallOnce(MemoryFileSystem):
        calls = 0
        stall_all = False

        def cat_file(self, path, start=None, end=None, **kw):
            StallOnce.calls += 1
            if StallOnce.calls == 1 or StallOnce.stall_all:
                release.wait(10)  # a hung socket
            return super().cat_file(path, start=start, end=end, **kw)

    fs = StallOnce(skip_instance_cache=True)
    fs.pipe_file("/stall/blob", bytes(range(200)))
    r = RangeReader(fs, retry=RetryPolicy(max_attempts=3, base_delay=0.001, timeout=0.3))
    t0 = time.perf_counter()
    assert r.read("/stall/blob", 10, 50, "memory://stall/blob") == bytes(range(10, 50))
    assert time.perf_counter() - t0 < 3 and StallOnce.calls == 2
    release.set()
    StallOnce.stall_all = True  # every attempt stalls now
    release.clear()
    with pytest.raises(StorageError, match=r"timed out after 2 attempt\(s\).*memory://stall/blob"):
        RangeReader(fs, retry=RetryPolicy(max_attempts=2, base_delay=0.001, timeout=0.2)).read(
            "/stall/blob", 0, 10, "memory://stall/blob")
    release.set()
    r.close()
