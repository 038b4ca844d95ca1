"""Sizes and versions of many S3 objects of one folder from a LIST instead of a HEAD each.

Why: opening a dataset needs every shard's size and version (its ETag).  A HEAD
per shard is a request per shard; one ``ListObjectsV2`` page describes up to
1,000 objects, with the same size and ETag a HEAD gives (S3's listings are
strongly consistent).  On a loopback S3 with 8 shards the open's 16 requests
become 9, which saves 20-30 ms of the open.

The listing is bounded: it starts just before the first wanted key, collapses
sub-folders (``Delimiter="/"``) and stops at the last wanted key or after
:func:`page_budget` pages, so a folder that also holds thousands of other objects
costs a few pages at most.  What it does not find (a key past the budget, a
missing object, a "directory"), and every object when S3 answers the listing
with an error other than "no such bucket" (a policy granting ``GetObject`` but
not ``ListBucket``, a bucket that takes no ``StartAfter``), is left to the
caller, which asks for those one by one as before.  ``CLOUDREC_S3_LIST=0`` turns it off.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

from cloudrec.errors import StorageError
from cloudrec.storage.fs_calls import call_fs
from cloudrec.storage.retry import RetryPolicy, is_transient

__all__ = ["LIST_PAGE", "listable", "page_budget", "list_objects"]

LIST_PAGE = 1000     # S3's most objects per ListObjectsV2 page


def listable(fs: Any) -> bool:
    """Is ``fs`` an s3fs filesystem whose objects may be described by listing?"""
    if os.environ.get("CLOUDREC_S3_LIST", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return type(fs).__module__.startswith("s3fs") and hasattr(fs, "_call_s3")


def page_budget(wanted: int) -> int:
    """Pages one listing may take: what ``wanted`` shards with their `.idx` fill, plus one."""
    return -(-2 * wanted // LIST_PAGE) + 1


def list_objects(fs: Any, paths: Sequence[str], retry: Optional[RetryPolicy] = None,
                 url: str = "") -> Optional[Dict[str, Dict[str, Any]]]:
    """``info``-like dicts (``name``, ``size``, ``ETag``, ``LastModified``, ``type``) of the
    ``paths`` (``bucket/folder/name``, all in one bucket and folder) that one bounded
    listing found; None when S3 answers the listing with an error other than "no such
    bucket" (the caller asks per object).

    A missing bucket and failures a retry could cure (after ``retry``) raise what s3fs
    or the retry policy raised for them; ``url`` names the folder in their messages."""
    if not paths:
        return {}
    bucket = paths[0].split("/", 1)[0]
    keys = sorted({p.split("/", 1)[1] for p in paths})
    folder = keys[0].rsplit("/", 1)[0] + "/" if "/" in keys[0] else ""
    if any(not k.startswith(folder) or "/" in k[len(folder):] for k in keys) or \
            any(p.split("/", 1)[0] != bucket for p in paths):
        raise ValueError("list_objects takes the objects of one folder of one bucket")
    wanted, last = set(keys), keys[-1]
    # StartAfter is exclusive: the first key without its last character sorts just before it
    kw: Dict[str, Any] = {"Bucket": bucket, "Prefix": folder, "Delimiter": "/",
                          "MaxKeys": LIST_PAGE, "StartAfter": keys[0][:-1]}
    if not kw["StartAfter"]:   # a one-character key at the bucket's top: list from the start
        del kw["StartAfter"]
    found: Dict[str, Dict[str, Any]] = {}
    for _ in range(page_budget(len(keys))):
        try:
            page = call_fs(fs, "call_s3", "list_objects_v2", retry=retry, url=url, **kw)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if _answered_no(exc):
                return None
            raise
        contents = page.get("Contents") or []
        for c in contents:
            key = c.get("Key", "")
            if key in wanted and c.get("Size") is not None:
                found[f"{bucket}/{key}"] = {
                    "name": f"{bucket}/{key}", "size": int(c["Size"]), "type": "file",
                    "ETag": c.get("ETag", ""), "LastModified": c.get("LastModified")}
        token = page.get("NextContinuationToken")
        seen = [c.get("Key", "") for c in contents] + \
            [p.get("Prefix", "") for p in page.get("CommonPrefixes") or []]
        if not page.get("IsTruncated") or not token or (seen and max(seen) >= last):
            break
        kw.pop("StartAfter", None)
        kw["ContinuationToken"] = token
    return found


def _answered_no(exc: BaseException) -> bool:
    """S3 answered, and not with "no such bucket": listing is refused (403) or not what this
    bucket supports (a 400 such as a directory bucket's answer to ``StartAfter``).  The
    caller then asks per object.  A missing bucket and failures a retry could cure (after
    the retries) are raised: the HEADs would only meet them again."""
    cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ is not None else exc
    return not isinstance(cause, FileNotFoundError) and not is_transient(cause)
