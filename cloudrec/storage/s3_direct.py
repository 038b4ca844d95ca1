"""Ranged S3 GETs without botocore's per-request machinery: a presigned URL sent on the
client's own aiohttp session.

Why: through s3fs and aiobotocore one ranged GetObject costs ~2.6 ms of client CPU
(request building, signing, event hooks, user-agent assembly, header and date
parsing of the answer).  On a 2-core machine that caps reads that are one record
each (map-style datasets, ``global`` order without a cache, ``max_gap=0``).
Presigning the same request costs ~0.15 ms (and one URL serves an object's GETs for a
minute); through the fetcher a GET then costs about half the client CPU
(``bench/s3_get.py``).

What stays as it was: the credentials (the client's, refreshed by botocore as
usual; a URL is reused for a minute of its 15, see :func:`_presigned`),
the endpoint and addressing style, TLS verification, proxies and the connection
pool (the client's own aiohttp session), the caller's retry policy and pinning
(``If-Match`` plus a check of the answer's ETag).  Filesystems that add request
parameters (requester pays, SSE-C keys, ``s3_additional_kwargs``) keep using
s3fs, as does an aiobotocore whose internals differ (checked once per client) and a
client whose presigned GET was redirected or refused (3xx, 400, 403).
``CLOUDREC_S3_DIRECT=0`` turns the direct path off.  Not done here: botocore's check
of the object's stored checksum, which S3 sends for whole-object GETs only; shard
cache downloads, whose bytes become entries others trust, keep botocore's path.

The presigned URL holds a signature and the access key id in its query: it never
leaves this module.  Errors name the ``s3://`` URL, and foreign error text is
passed through :func:`cloudrec.storage.redact.redact_text`.
"""
from __future__ import annotations

import errno
import os
import re
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Optional

from cloudrec.errors import StorageError
from cloudrec.storage.redact import redact_text

__all__ = ["enabled_for", "usable", "response", "get_range", "S3AnswerError", "UseS3fs",
           "PRESIGN_SECONDS"]

PRESIGN_SECONDS = 900      # a signature outlives any retry loop of one request
REUSE_SECONDS = 60         # how long one presigned URL serves the GETs of an object
_URLS = "_cloudrec_presigned"   # per client: (bucket, key, version) -> (url, when signed)
_URLS_MAX = 4096
_ERROR_BODY_LIMIT = 64 << 10
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
_ATTR = "_cloudrec_direct_ok"   # per client: can its HTTP session be used directly?


class UseS3fs(Exception):
    """This client's direct GET was refused in a way s3fs may not be (a region redirect,
    a bucket policy denying query-string auth, a server without presigned URLs): the
    caller reads through s3fs, now and from then on for this client."""


_FALLBACK_STATUSES = (301, 302, 307, 308, 400, 403)


class S3AnswerError(OSError):
    """S3 answered a direct GET with an error status: ``status`` and S3's ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _switched_off() -> bool:
    return os.environ.get("CLOUDREC_S3_DIRECT", "1").strip().lower() in ("0", "false", "no", "off")


def enabled_for(fs: Any) -> bool:
    """May ranged reads of this filesystem take the direct path?"""
    if _switched_off() or not type(fs).__module__.startswith("s3fs"):
        return False
    if getattr(fs, "req_kw", None) or getattr(fs, "s3_additional_kwargs", None):
        return False   # requester pays, SSE-C, ...: parameters a presigned GET would drop
    client = getattr(fs, "_s3", None)
    return client is None or getattr(client, _ATTR, True) is not False


def _http_session(client: Any) -> Any:
    """The client's aiobotocore HTTP session if it has the parts used here, else None."""
    hs = getattr(getattr(client, "_endpoint", None), "http_session", None)
    cfg = getattr(hs, "_proxy_config", None)
    if hs is None or not hasattr(hs, "_get_session") or cfg is None or \
            not hasattr(cfg, "proxy_url_for") or not hasattr(cfg, "proxy_headers_for"):
        return None
    return hs


async def usable(fs: Any) -> bool:
    """Can this filesystem's client take the direct path (checked once per client)?"""
    if not enabled_for(fs):
        return False
    await fs.set_session()
    if _http_session(fs.s3) is None:
        setattr(fs.s3, _ATTR, False)
        return False
    return True


@asynccontextmanager
async def response(fs: Any, path: str, start: int, end: int, etag: Optional[str],
                   url: str) -> AsyncIterator[Any]:
    """The aiohttp response of one presigned GET of ``[start, end)`` (call :func:`usable`
    first), its status and range checked; errors inside the block are mapped too.

    ``etag`` pins the read: ``If-Match`` is sent and the answer's ETag compared; a
    mismatch is an :class:`S3AnswerError` with status 412 (the caller's pinning turns
    it into an ObjectChangedError).  Error answers raise :class:`S3AnswerError`
    (404: FileNotFoundError), a lost connection or a body cut short a ConnectionError,
    a timeout a TimeoutError: what the retry policy sorts.  A redirect, 400 or 403
    raises :class:`UseS3fs` and marks the client (botocore follows region redirects,
    and a bucket policy may refuse query-string auth alone)."""
    import aiohttp
    from yarl import URL

    client = fs.s3
    hs = _http_session(client)
    signed = await _presigned(client, *fs.split_path(path))
    headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
    if etag:
        headers["If-Match"] = etag if etag.startswith(("W/", '"')) else f'"{etag}"'
    try:
        proxy = hs._proxy_config.proxy_url_for(signed)
        proxy_headers = hs._proxy_config.proxy_headers_for(signed) or None
        session = await hs._get_session(proxy)
        async with session.get(URL(signed, encoded=True), headers=headers, proxy=proxy,
                               proxy_headers=proxy_headers, allow_redirects=False) as resp:
            if resp.status in _FALLBACK_STATUSES:
                setattr(client, _ATTR, False)
                raise UseS3fs(resp.status)
            if resp.status not in (200, 206):
                raise _answer_error(resp.status, await resp.content.read(_ERROR_BODY_LIMIT), url)
            now = (resp.headers.get("ETag") or "").strip('"')
            if etag and now and now != etag.strip('"'):
                raise S3AnswerError(412, "PreconditionFailed",
                                    f"ETag {now!r} now, {etag!r} expected: {url}")
            got = resp.headers.get("Content-Range") or ""
            if (resp.status == 206 and not got.startswith(f"bytes {start}-")) or \
                    (resp.status == 200 and start):
                raise StorageError(f"the server ignored the byte range (answered "
                                   f"{resp.status} {got!r})", url, start, end)
            yield resp
    except UseS3fs:
        raise
    except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as exc:
        raise OSError(errno.EPROTO, f"TLS failed for {url}: {_safe(exc)}") from None
    except aiohttp.ServerTimeoutError as exc:
        raise TimeoutError(f"S3 GET of {url} timed out: {_safe(exc)}") from None
    except aiohttp.ClientError as exc:   # (aiohttp's connection errors are OSErrors too)
        # connection refused or lost, a body cut short: transient, like botocore's
        raise ConnectionError(f"S3 GET of {url}: {type(exc).__name__}: {_safe(exc)}") from None


async def _presigned(client: Any, bucket: str, key: str, version: Optional[str]) -> str:
    """A presigned GET URL for the object, reused for ``REUSE_SECONDS`` (presigning is
    ~0.15 ms, a sixth of a direct GET's client CPU, and a shard takes many GETs).

    Reuse is safe: the URL stays valid for ``PRESIGN_SECONDS``, and botocore renews
    temporary credentials 10-15 minutes before they expire, so a URL signed just
    before a renewal still has minutes left when it is last used."""
    cache = getattr(client, _URLS, None)
    if cache is None:
        cache = {}
        setattr(client, _URLS, cache)
    now = time.monotonic()
    hit = cache.get((bucket, key, version))
    if hit is not None and now - hit[1] < REUSE_SECONDS:
        return hit[0]
    params: Dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version:
        params["VersionId"] = version
    url = await client.generate_presigned_url("get_object", Params=params,
                                              ExpiresIn=PRESIGN_SECONDS)
    if len(cache) >= _URLS_MAX:
        cache.clear()
    cache[(bucket, key, version)] = (url, now)
    return url


async def get_range(fs: Any, path: str, start: int, end: int, etag: Optional[str],
                    url: str) -> Optional[bytes]:
    """``[start, end)`` of ``path`` by one presigned ranged GET (see :func:`response`), or
    None when this client cannot take the direct path (read through s3fs instead)."""
    if not await usable(fs):
        return None
    try:
        async with response(fs, path, start, end, etag, url) as resp:
            body = await resp.read()
    except UseS3fs:
        return None
    return body[:end - start] if len(body) > end - start else body


_URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]*)\?[^\s'\"<>]*")


def _safe(exc: BaseException) -> str:
    """A foreign exception's text with secrets masked and any URL's query dropped (a
    presigned URL's query is its signature)."""
    return _URL_QUERY.sub(r"\1?***", str(redact_text(str(exc))))


def _answer_error(status: int, body: bytes, url: str) -> OSError:
    m = _CODE.search(body or b"")
    code = m.group(1).decode("ascii", "replace") if m else ""
    what = f"S3 answered {status}{' ' + code if code else ''} for {url}"
    if status == 404:
        return FileNotFoundError(errno.ENOENT, what)
    if status == 416:
        return S3AnswerError(status, code or "InvalidRange",
                             f"{what}: the requested range is not satisfiable")
    return S3AnswerError(status, code, what)
