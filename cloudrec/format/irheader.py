"""The image-record header (``IRHeader``, struct ``<IfQQ``) and packed labels.

``pack``/``unpack`` follow MXNet exactly: a scalar label forces ``flag = 0``;
an array label is written as ``flag`` float32 values after the 24-byte header
with 0 in the header's label field.
"""
from __future__ import annotations

import numbers
import struct
from collections import namedtuple
from typing import Tuple, Union

import numpy as np

from cloudrec.errors import HeaderError

IRHeader = namedtuple("HEADER", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """Header of an image record: flag (label count), label, id, id2 (reserved)."""

_STRUCT = struct.Struct("<IfQQ")
HEADER_SIZE = _STRUCT.size  # 24


def pack(header, s: bytes) -> bytes:
    """Prepend an IRHeader (and packed float32 labels) to ``s``; MXNet's ``recordio.pack``."""
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        header = header._replace(flag=0)
        labels = b""
    else:
        arr = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=int(arr.size), label=0)
        labels = arr.tobytes()
    try:
        head = _STRUCT.pack(int(header.flag), float(header.label), int(header.id), int(header.id2))
    except struct.error as exc:
        raise HeaderError(f"cannot pack header {header!r}: {exc}") from exc
    return head + labels + bytes(s)


def unpack_header(s) -> Tuple[IRHeader, int]:
    """Parse the header; return ``(header, payload_start)``.

    The label is a float for ``flag == 0`` and a read-only float32 array of
    ``flag`` values otherwise.
    """
    if len(s) < HEADER_SIZE:
        raise HeaderError(f"record payload of {len(s)} bytes is shorter than the "
                          f"{HEADER_SIZE}-byte IRHeader")
    flag, label, id_, id2 = _STRUCT.unpack_from(s, 0)
    start = HEADER_SIZE
    if flag > 0:
        end = HEADER_SIZE + 4 * flag
        if end > len(s):
            raise HeaderError(f"IRHeader flag {flag} needs {4 * flag} label bytes, "
                              f"only {len(s) - HEADER_SIZE} follow the header")
        label = np.frombuffer(s, dtype=np.float32, count=flag, offset=HEADER_SIZE)
        start = end
    return IRHeader(flag, label, id_, id2), start


def unpack(s: bytes) -> Tuple[IRHeader, bytes]:
    """Split a record payload into ``(IRHeader, image bytes)``; MXNet's ``recordio.unpack``."""
    header, start = unpack_header(s)
    return header, s[start:]


LabelLike = Union[float, np.ndarray]
