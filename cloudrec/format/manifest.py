"""The pack manifest: a small JSON object im2rec writes LAST, listing a pack's shards.

A sharded pack ``train-00000-of-00008.rec ...`` is complete exactly when
``train.manifest.json`` exists and every shard it lists has the size and
record count it records.  On object storage a "rename" is a copy plus a
delete, so shards appear one by one; the manifest is what makes the set
appear at once.  This module only builds and parses the bytes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from cloudrec.errors import IndexFileError

MANIFEST_FORMAT = "cloudrec-pack-manifest"
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
SHARD_NAME = re.compile(r"^(?P<base>.+)-(?P<index>\d{5,})-of-(?P<count>\d{5,})\.rec$")


def manifest_name(base: str) -> str:
    """``train`` -> ``train.manifest.json`` (a ``train-*`` glob never matches it)."""
    return base + MANIFEST_SUFFIX


def parse_shard_name(name: str) -> Optional[Tuple[str, int, int]]:
    """``train-00003-of-00008.rec`` -> ``("train", 3, 8)``; None for other names."""
    m = SHARD_NAME.match(name)
    if not m:
        return None
    return m.group("base"), int(m.group("index")), int(m.group("count"))


def shard_file_name(base: str, index: int, count: int) -> str:
    """The `.rec` name of shard ``index`` of ``count`` (im2rec's naming)."""
    return "%s-%05d-of-%05d.rec" % (base, index, count)


@dataclass(frozen=True)
class ManifestShard:
    """One shard as the manifest records it: `.rec` name (no folder), bytes, records."""

    rec: str
    size: int
    records: int


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: the pack's base name and its shards in order."""

    base: str
    shards: Tuple[ManifestShard, ...]

    @property
    def by_name(self) -> Dict[str, ManifestShard]:
        return {s.rec: s for s in self.shards}

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards)


def build_manifest(base: str, shards: Sequence[ManifestShard]) -> bytes:
    """The manifest's bytes (sorted keys, one shard per line: diffable, stable)."""
    doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "base": base,
           "records": sum(s.records for s in shards),
           "shards": [{"rec": s.rec, "idx": s.rec[:-4] + ".idx", "size": int(s.size),
                       "records": int(s.records)} for s in shards]}
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def parse_manifest(data: bytes, url: Optional[str] = None) -> Manifest:
    """Parse manifest bytes; anything unexpected is an IndexFileError naming ``url``."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexFileError(f"pack manifest is not JSON: {exc}", url) from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise IndexFileError(f"not a cloudrec pack manifest (format {MANIFEST_FORMAT!r} "
                             "expected)", url)
    if doc.get("version") != MANIFEST_VERSION:
        raise IndexFileError(f"pack manifest version {doc.get('version')!r} is not supported "
                             f"(this cloudrec reads version {MANIFEST_VERSION})", url)
    out: List[ManifestShard] = []
    try:
        for item in doc["shards"]:
            rec, size, records = item["rec"], item["size"], item["records"]
            if not isinstance(rec, str) or not isinstance(size, int) \
                    or not isinstance(records, int) or size < 0 or records < 0:
                raise TypeError(item)
            out.append(ManifestShard(rec, size, records))
        base = doc["base"]
        if not isinstance(base, str):
            raise TypeError(base)
    except (KeyError, TypeError) as exc:
        raise IndexFileError(f"pack manifest has a malformed entry: {exc!r}", url) from None
    return Manifest(base, tuple(out))
