"""The checksum an object store keeps for a whole object, checked against the bytes received.

S3 keeps a checksum for every object uploaded with one (botocore sends CRC32 by
default) and returns it on a GET that asks for it (``ChecksumMode=ENABLED``) and
covers the whole object.  A shard-cache download turns one GET into an entry
every process of the node trusts afterwards, so it checks that value: a byte
changed on the way (a plain-HTTP endpoint has no TLS record MAC to catch it) is
refused instead of cached.  Only whole-object (``FULL_OBJECT``) values are
checked: CRC32 is the download's own running CRC, the SHA-1 and SHA-256 digests
are computed from the bytes as they arrive, and so are CRC64NVME (what S3 stores
for an object uploaded without a checksum) and CRC32C, with AWS's ``awscrt``
(``pip install cloudrec[crt]``; botocore uses the same library for them).
Without it those two are not checked, as botocore does not check them either.
A multipart object's composite value (``...-N``) is not a checksum of the bytes.

Why not botocore's own check: its streaming body validates only when a read
returns the end of the body, which a reader that stops at the last byte of its
range never asks for, so the check never ran.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, Mapping, Optional

from cloudrec.errors import ChecksumMismatchError

try:   # CRC64NVME and CRC32C have no fast pure-Python implementation
    from awscrt import checksums as _crt
except ImportError:   # pragma: no cover - the crt extra is not installed
    _crt = None

# botocore response field -> algorithm, in the order a value is preferred
_FIELDS = (("ChecksumCRC32", "crc32"), ("ChecksumCRC64NVME", "crc64nvme"),
           ("ChecksumCRC32C", "crc32c"), ("ChecksumSHA256", "sha256"), ("ChecksumSHA1", "sha1"))
_NATIVE = {"crc64nvme": 8, "crc32c": 4}   # algorithm -> bytes of its value (awscrt)


def native_available() -> bool:
    """Can CRC64NVME and CRC32C values be checked here (is ``awscrt`` installed)?"""
    return _crt is not None


class StoredChecksum:
    """One stored whole-object checksum; ``update`` with the bytes (in order), then ``check``."""

    __slots__ = ("algorithm", "expected", "_hash", "_crc")

    def __init__(self, algorithm: str, expected: str) -> None:
        if algorithm in _NATIVE and _crt is None:
            raise ValueError(f"checking {algorithm} needs awscrt (pip install cloudrec[crt])")
        self.algorithm, self.expected = algorithm, expected
        self._crc = 0
        self._hash = None if algorithm == "crc32" or algorithm in _NATIVE else \
            hashlib.new(algorithm)

    def __repr__(self) -> str:
        return f"StoredChecksum({self.algorithm}={self.expected})"

    def update(self, data: bytes) -> None:
        """Feed the next bytes of the object (a no-op for CRC32: the caller's CRC is used)."""
        if self._hash is not None:
            self._hash.update(data)
        elif self.algorithm in _NATIVE:
            self._crc = getattr(_crt, self.algorithm)(data, self._crc)

    def check(self, crc32: Optional[int], url: str, size: int) -> None:
        """Raise ChecksumMismatchError naming ``url`` unless the bytes match the stored value.

        ``crc32``: ``zlib.crc32`` of the whole object, as the caller computed it."""
        if self._hash is not None:
            got = self._hash.digest()
        elif self.algorithm in _NATIVE:
            got = self._crc.to_bytes(_NATIVE[self.algorithm], "big")
        else:
            if crc32 is None:
                raise ValueError("a CRC32 check needs the CRC of the bytes")
            got = (crc32 & 0xFFFFFFFF).to_bytes(4, "big")
        if base64.b64encode(got).decode() != self.expected:
            raise ChecksumMismatchError(
                f"the {size} bytes received do not match the object's stored "
                f"{self.algorithm.upper()} {self.expected} (got {base64.b64encode(got).decode()}): "
                f"changed on the way; not cached", url, 0, size)


def from_response(resp: Mapping[str, Any]) -> Optional[StoredChecksum]:
    """The checksum a botocore ``GetObject`` answer carries, or None (none sent, a composite
    value, or CRC64NVME/CRC32C without ``awscrt``)."""
    if str(resp.get("ChecksumType") or "FULL_OBJECT").upper() != "FULL_OBJECT":
        return None
    for field, algorithm in _FIELDS:
        if algorithm in _NATIVE and _crt is None:
            continue
        value = resp.get(field)
        if value and "-" not in str(value):
            return StoredChecksum(algorithm, str(value))
    return None


def covers_whole(content_range: str, start: int, end: int) -> bool:
    """Does a GET of ``[start, end)`` answered with ``content_range`` carry the whole object?"""
    if start != 0:
        return False
    if not content_range:
        return True   # a 200: the whole body
    total = content_range.rpartition("/")[2]
    return total.isdigit() and int(total) == end
