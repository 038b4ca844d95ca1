"""Checking that a glob or brace range opens a complete im2rec pack.

``open_dataset("s3://b/train-*.rec")`` must never open part of a pack as if
it were all of it (im2rec killed while its shards were being copied into
place on S3).  Shard names ``BASE-IIIII-of-NNNNN.rec`` tell which pack a
URL belongs to; ``BASE.manifest.json`` next to them, written last, lists the
pack.  With a manifest every opened shard must be listed with its size and
record count, and every listed shard the pattern matches must be there.
Without one (a pack from before manifests, or an unfinished one) temporary
objects ``.BASE-*.tmp-*`` or gaps in ``0..NNNNN-1`` mean an incomplete pack.
Costs one small GET per pack (plus one listing when there is no manifest).
"""
from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cloudrec.errors import CloudrecError, StorageError
from cloudrec.format.manifest import (Manifest, manifest_name, parse_manifest,
                                      parse_shard_name, shard_file_name)
from cloudrec.storage.fs import resolve
from cloudrec.storage.fs_calls import call_fs
from cloudrec.storage.retry import RetryPolicy


class IncompletePackError(CloudrecError, ValueError):
    """The shards a pattern matched are not one complete im2rec pack."""


def _split(url: str) -> Tuple[str, str]:
    i = url.rstrip("/").rfind("/")
    return (url[:i], url[i + 1:]) if i >= 0 else ("", url)


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


@dataclass
class PackGroup:
    """The opened shards of one pack (same folder, base name and shard count)."""

    folder: str
    base: str
    count: int
    urls: List[str] = field(default_factory=list)
    manifest_url: str = ""
    manifest: Optional[Manifest] = None


def group_packs(rec_urls: Sequence[str]) -> List[PackGroup]:
    """Group shard URLs by pack; URLs not named like im2rec shards are left out."""
    groups: Dict[Tuple[str, str, int], PackGroup] = {}
    for url in rec_urls:
        folder, name = _split(url)
        parsed = parse_shard_name(name)
        if parsed is None:
            continue
        base, _, count = parsed
        g = groups.setdefault((folder, base, count), PackGroup(folder, base, count))
        g.urls.append(url)
    return list(groups.values())


def _read_optional(url: str, storage_options: Optional[Dict[str, Any]],
                   retry: Optional[RetryPolicy]) -> Optional[bytes]:
    fs, path = resolve(url, storage_options)
    try:
        return call_fs(fs, "cat_file", path, retry=retry, url=url)
    except FileNotFoundError:
        return None


def _temporaries(group: PackGroup, storage_options: Optional[Dict[str, Any]]) -> List[str]:
    fs, path = resolve(_join(group.folder, f".{group.base}-*.tmp-*"), storage_options)
    try:
        return sorted(posixpath.basename(p) for p in fs.glob(path))
    except (FileNotFoundError, NotImplementedError):
        return []
    except StorageError:
        raise
    except Exception as exc:  # OSError, botocore errors, ...
        raise StorageError(f"cannot list the pack's temporaries: {type(exc).__name__}: {exc}",
                           _join(group.folder, "")) from exc


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Does a shard's file name match the last path component of a pattern?"""
    return any(fnmatch.fnmatchcase(name, _split(p)[1]) for p in patterns)


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_packs_before_open(rec_urls: Sequence[str], glob_patterns: Sequence[str],
                            storage_options: Optional[Dict[str, Any]] = None,
                            retry: Optional[RetryPolicy] = None) -> List[PackGroup]:
    """Read each pack's manifest; refuse a pattern that matched an incomplete pack.

    ``glob_patterns`` are the user's patterns that contained ``*?[`` (after
    brace expansion): only those can silently match fewer shards than exist.
    """
    groups = group_packs(rec_urls)
    for g in groups:
        g.manifest_url = _join(g.folder, manifest_name(g.base))
        data = _read_optional(g.manifest_url, storage_options, retry)
        opened = sorted(_split(u)[1] for u in g.urls)
        if data is not None:
            g.manifest = parse_manifest(data, g.manifest_url)
            listed = g.manifest.by_name
            extra = [n for n in opened if n not in listed]
            if extra:
                raise IncompletePackError(
                    f"{_names(extra)} not listed in the pack manifest {g.manifest_url} (left "
                    "over from another pack, or an unfinished re-pack); re-run im2rec or "
                    "remove the stray shards")
            missing = [s.rec for s in g.manifest.shards if s.rec not in set(opened)
                       and _matches(s.rec, glob_patterns)]
            if missing:
                raise IncompletePackError(
                    f"the pattern matched {len(opened)} of the pack's shards but "
                    f"{_names(missing)}, listed in {g.manifest_url}, "
                    f"{'is' if len(missing) == 1 else 'are'} missing")
            continue
        temps = _temporaries(g, storage_options)
        if temps:
            raise IncompletePackError(
                f"{g.folder}/{g.base}-*: no pack manifest {manifest_name(g.base)} and "
                f"temporary objects {_names(temps)} present: im2rec did not finish this "
                "pack (re-run it, or delete the temporaries and the shards)")
        expected = [shard_file_name(g.base, i, g.count) for i in range(g.count)]
        gaps = [n for n in expected if n not in set(opened)
                and _matches(n, glob_patterns)]
        if gaps:
            raise IncompletePackError(
                f"the pattern matched {len(opened)} shard(s) of a {g.count}-shard pack in "
                f"{g.folder} but {_names(gaps)} {'is' if len(gaps) == 1 else 'are'} missing "
                f"(and there is no {manifest_name(g.base)}): the pack is incomplete")
    return groups


def check_packs_after_open(groups: Sequence[PackGroup], sizes: Dict[str, int],
                           records: Dict[str, int]) -> None:
    """Every opened shard has the size and record count its manifest records."""
    for g in groups:
        if g.manifest is None:
            continue
        listed = g.manifest.by_name
        for url in g.urls:
            want = listed[_split(url)[1]]
            if sizes.get(url) != want.size:
                raise IncompletePackError(
                    f"shard holds {sizes.get(url)} bytes but the pack manifest "
                    f"{g.manifest_url} records {want.size}: the shard was cut, replaced or "
                    f"is from another pack ({url})")
            if url in records and records[url] != want.records:
                raise IncompletePackError(
                    f"shard's index lists {records[url]} records but the pack manifest "
                    f"{g.manifest_url} records {want.records} ({url})")
