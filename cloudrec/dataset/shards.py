"""Shards of a dataset: URL expansion (list, glob, brace range) and per-shard facts.

A shard is one `.rec` object plus its `.idx` (the sibling by default).  Sizes
and versions come from one listing per S3 folder, else from one ``info`` per
shard, fetched concurrently, because each remote call costs a round trip.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from cloudrec.errors import ConfigError, IndexFileError, StorageError
from cloudrec.storage.fs import resolve
from cloudrec.storage.fs_calls import call_fs
from cloudrec.storage.retry import RetryPolicy, StorageNotFound

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_GLOB_CHARS = set("*?[")
INFO_CONCURRENCY = 16


@dataclass
class Shard:
    """One `.rec` object: URLs, size in bytes and a version tag (ETag or mtime)."""

    rec_url: str
    idx_url: Optional[str]
    size: int
    version: str = ""
    fs: Any = field(default=None, repr=False, compare=False)
    path: str = field(default="", repr=False)

    def __repr__(self) -> str:
        from cloudrec.storage.redact import redact_url
        return (f"Shard(rec_url={redact_url(self.rec_url)!r}, idx_url="
                f"{redact_url(self.idx_url)!r}, size={self.size}, version={self.version!r})")


def expand_braces(url: str) -> List[str]:
    """Expand ``{0000..0127}`` (zero-padded like the first bound) and ``{a,b,c}``."""
    m = _BRACE.search(url)
    if not m:
        return [url]
    head, body, tail = url[:m.start()], m.group(1), url[m.end():]
    r = _RANGE.match(body)
    if r:
        lo, hi = r.group(1), r.group(2)
        width = len(lo) if lo.lstrip("-").startswith("0") and len(lo) > 1 else 0
        a, b = int(lo), int(hi)
        step = 1 if b >= a else -1
        items = [str(i).zfill(width) if width else str(i) for i in range(a, b + step, step)]
    elif "," in body:
        items = body.split(",")
    else:
        return [head + "{" + body + "}" + t for t in expand_braces(tail)]
    return [head + it + t for it in items for t in expand_braces(tail)]


def _has_glob(url: str) -> bool:
    path = url.split("://", 1)[-1]
    return any(c in _GLOB_CHARS for c in path)


def _glob(url: str, storage_options: Optional[Dict[str, Any]]) -> List[str]:
    fs, path = resolve(url, storage_options)
    try:
        found = sorted(fs.glob(path))
    except FileNotFoundError:
        found = []
    except PermissionError as exc:
        raise StorageError(f"access denied while listing: {exc}", url) from exc
    except StorageError:
        raise
    except Exception as exc:  # OSError, botocore's EndpointConnectionError, ...
        raise StorageError(f"cannot list: {type(exc).__name__}: {exc}", url) from exc
    if not url.endswith(".idx"):  # "train-*" matches the .idx files too
        found = [p for p in found if not p.endswith(".idx")]
    if not found:
        raise StorageNotFound("no shard matches this pattern", url)
    prefix = None
    if "://" in url and url.endswith(path):
        prefix = url[: len(url) - len(path)]
    out = []
    for p in found:
        if "://" not in url:
            out.append(p)
        elif prefix is not None and not p.startswith(prefix):
            out.append(prefix + p if (prefix.endswith("/") or p.startswith("/")) else prefix + "/" + p)
        else:
            out.append(fs.unstrip_protocol(p))
    return out


def expand_urls(urls: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                storage_options: Optional[Dict[str, Any]] = None) -> List[str]:
    """Turn one URL, a list, globs and brace ranges into a flat list of shard URLs."""
    if isinstance(urls, (str, os.PathLike)):
        urls = [urls]
    out: List[str] = []
    for u in urls:
        for v in expand_braces(os.fspath(u)):
            out.extend(_glob(v, storage_options) if _has_glob(v) else [v])
    if not out:
        raise ConfigError("no shard URLs given")
    return out


def sibling_idx(rec_url: str) -> str:
    """The default index URL of a shard: ``x.rec`` -> ``x.idx``."""
    return rec_url[:-4] + ".idx" if rec_url.endswith(".rec") else rec_url + ".idx"


def _version(info: Dict[str, Any]) -> str:
    """A tag that changes when the object changes: ETag, else modification time."""
    for k in ("ETag", "etag", "VersionId", "mtime", "LastModified", "last_modified",
              "modification_time", "modificationTime", "updated", "created"):
        v = info.get(k)
        if v not in (None, ""):
            return f"{k}={str(v).strip(chr(34))}"
    return ""


def _info(url: str, storage_options: Optional[Dict[str, Any]],
          retry: Optional[RetryPolicy] = None) -> Shard:
    try:
        fs, path = resolve(url, storage_options)
        info = call_fs(fs, "info", path, retry=retry, url=url)
    except FileNotFoundError as exc:
        why = "" if isinstance(exc, StorageError) else f" ({exc})"
        raise StorageNotFound(f"shard not found{why}", url) from exc
    except PermissionError as exc:
        raise StorageError(f"access denied to shard ({exc})", url) from exc
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot stat shard: {type(exc).__name__}: {exc}", url) from exc
    except Exception as exc:  # botocore ClientError etc.
        text = str(exc)
        if "NoSuchBucket" in text or "404" in text:
            raise StorageNotFound(f"shard not found ({text})", url) from exc
        if "AccessDenied" in text or "403" in text or "Forbidden" in text:
            raise StorageError(f"access denied to shard ({text})", url) from exc
        raise StorageError(f"cannot stat shard: {type(exc).__name__}: {text}", url) from exc
    if info.get("type") == "directory":
        raise StorageError("expected a .rec file, found a directory", url)
    size = info.get("size")
    if size is None:
        raise StorageError("the server does not report the object size", url)
    return Shard(url, None, int(size), _version(info), fs, path)


def stat_shards(rec_urls: Sequence[str], idx_urls: Optional[Sequence[Optional[str]]] = None,
                storage_options: Optional[Dict[str, Any]] = None,
                concurrency: int = INFO_CONCURRENCY,
                retry: Optional[RetryPolicy] = None,
                pool: Optional[ThreadPoolExecutor] = None) -> List[Shard]:
    """Size and version of every shard; ``idx_urls`` default to the siblings.

    S3 shards that share a folder are described by one bounded listing of it
    (:mod:`cloudrec.storage.s3_listing`); the others, and those the listing did
    not find, by one concurrent ``info`` each.  ``pool``: run the calls there
    (open_dataset shares one pool between sizes and `.idx` reads so both overlap).
    """
    if idx_urls is None:
        idx_urls = [sibling_idx(u) for u in rec_urls]
    if len(idx_urls) != len(rec_urls):
        raise ConfigError(f"{len(rec_urls)} shards but {len(idx_urls)} index URLs")
    own = None
    if pool is None and len(rec_urls) > 1:
        own = pool = ThreadPoolExecutor(min(concurrency, len(rec_urls)))
    try:
        shards = _stat_all(list(rec_urls), storage_options, retry, pool)
    finally:
        if own is not None:
            own.shutdown()
    for s, i in zip(shards, idx_urls):
        s.idx_url = os.fspath(i) if i is not None else None
    return shards


def _stat_all(rec_urls: List[str], storage_options: Optional[Dict[str, Any]],
              retry: Optional[RetryPolicy], pool: Optional[ThreadPoolExecutor]) -> List[Shard]:
    def run(fn: Any, *args: Any) -> Any:
        return pool.submit(fn, *args) if pool is not None else _Done(fn, *args)

    groups = _listing_groups(rec_urls, storage_options)
    grouped = {i for _, members in groups.values() for i, _ in members}
    heads = {i: run(_info, u, storage_options, retry) for i, u in enumerate(rec_urls)
             if i not in grouped}
    listings = {g: run(_list_group, fs, [(rec_urls[i], p) for i, p in members], retry)
                for g, (fs, members) in groups.items()}
    out: Dict[int, Any] = {}
    for g, (_, members) in groups.items():
        found = listings[g].result()
        for i, _ in members:
            if found is not None and rec_urls[i] in found:
                out[i] = replace(found[rec_urls[i]])   # a shard named twice: two objects
            else:  # not listed (or listing refused): ask for this one
                heads[i] = run(_info, rec_urls[i], storage_options, retry)
    for i, f in heads.items():
        out[i] = f.result()
    return [out[i] for i in range(len(rec_urls))]


class _Done:
    """A call run at once, shaped like a Future (no pool for a single shard)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self._value = fn(*args)

    def result(self) -> Any:
        return self._value


def _listing_groups(rec_urls: Sequence[str], storage_options: Optional[Dict[str, Any]]
                    ) -> Dict[Any, Tuple[Any, List[Tuple[int, str]]]]:
    """Shards worth one listing: S3 objects (no version in the URL) sharing a bucket and
    folder, at least two of them; per folder its filesystem and (index, path) of each."""
    from cloudrec.storage.s3_listing import listable
    groups: Dict[Any, Tuple[Any, List[Tuple[int, str]]]] = {}
    for i, u in enumerate(rec_urls):
        try:
            fs, path = resolve(u, storage_options)
        except Exception:  # noqa: BLE001 - the info call reports it, naming the shard
            continue
        if not listable(fs) or "?" in path or "/" not in path:
            continue
        groups.setdefault((id(fs), path.rsplit("/", 1)[0]), (fs, []))[1].append((i, path))
    return {g: m for g, m in groups.items() if len(m[1]) > 1}


def _list_group(fs: Any, members: List[Tuple[str, str]], retry: Optional[RetryPolicy]
                ) -> Optional[Dict[str, Shard]]:
    """The shards of one folder (``(url, path)`` each) the listing found, by URL; None when
    S3 refused the listing."""
    from cloudrec.storage.s3_listing import list_objects
    urls = [u for u, _ in members]
    paths = {p: u for u, p in members}
    folder = urls[0].rsplit("/", 1)[0] + "/"
    try:
        found = list_objects(fs, list(paths), retry=retry, url=folder)
    except FileNotFoundError as exc:   # no such bucket
        raise StorageNotFound(f"shard not found ({exc})", urls[0]) from exc
    except StorageError:
        raise
    except Exception as exc:  # OSError kinds s3fs raises, botocore's errors
        raise StorageError(f"cannot stat shard (listing {folder}): "
                           f"{type(exc).__name__}: {exc}", urls[0]) from exc
    if found is None:
        return None
    return {paths[p]: Shard(paths[p], None, int(info["size"]), _version(info), fs, p)
            for p, info in found.items()}


class IndexNotFoundError(IndexFileError):
    """A shard has no `.idx` (the only index problem a scan may silently replace)."""


def _is_s3fs(fs: Any) -> bool:
    return any(c.__name__ == "S3FileSystem" and c.__module__.startswith("s3fs")
               for c in type(fs).__mro__)


def read_idx_bytes(shard: Shard, storage_options: Optional[Dict[str, Any]] = None,
                   retry: Optional[RetryPolicy] = None) -> bytes:
    """The `.idx` file of a shard; a missing one raises IndexNotFoundError naming it."""
    return read_idx_url(shard.idx_url, shard.rec_url, storage_options, retry)


def read_idx_url(url: Optional[str], rec_url: str,
                 storage_options: Optional[Dict[str, Any]] = None,
                 retry: Optional[RetryPolicy] = None) -> bytes:
    """The bytes of ``url``, the index of ``rec_url``; errors name both."""
    if url is None:
        raise IndexNotFoundError("no index for this shard", rec_url)
    try:
        fs, path = resolve(url, storage_options)
        # s3fs asks for the size first (a HEAD, one more round trip per shard at open) to
        # split big objects into concurrent ranges; an .idx is read in one GET instead
        kw = {"max_concurrency": 1} if _is_s3fs(fs) else {}
        return call_fs(fs, "cat_file", path, retry=retry, url=url, **kw)
    except FileNotFoundError as exc:
        raise IndexNotFoundError(f"index file not found (shard {rec_url})", url) from exc
    except PermissionError as exc:
        raise IndexFileError(f"access denied to index file ({exc})", url) from exc
    except StorageError as exc:
        raise IndexFileError(f"cannot read index file: {exc}", url) from exc
    except OSError as exc:
        raise IndexFileError(f"cannot read index file: {type(exc).__name__}: {exc}", url) from exc
