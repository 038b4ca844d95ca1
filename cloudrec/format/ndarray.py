"""MXNet's NDArray file format (``mx.nd.save`` / ``mx.nd.load``, ``.params``, mean images), as bytes.

Layout (little-endian; MXNet 1.x ``NDArray::Save`` and ``dmlc::Stream``):

* list header: uint64 magic ``0x112``, uint64 reserved (0), uint64 array count;
* each array: uint32 magic (V2 ``0xF993FAC9``), int32 storage type (0 = dense),
  shape (uint32 ndim, then ndim int64 dims), context (int32 device type,
  int32 device id), int32 dtype flag, then the raw C-order data, no padding;
* names: uint64 count (0, or one per array), each a uint64 length + UTF-8 bytes.

Reading also takes V1 arrays (``0xF993FAC8``: no storage type), V3 arrays
(``0xF993FACA``, numpy shape semantics: int32 ndim, 0-d scalars allowed) and
the pre-V1 layout (no magic, uint32 dims).  Writing produces V2, byte-identical
to MXNet 1.9.1, except for 0-d arrays, which only V3 can hold.  Sparse
arrays (row_sparse, csr) are refused with a clear error.  No file IO here.
"""
from __future__ import annotations

import math
import struct
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from cloudrec.errors import CloudrecError

__all__ = ["LIST_MAGIC", "V1_MAGIC", "V2_MAGIC", "V3_MAGIC", "NDArrayFormatError",
           "is_ndarray_file", "decode_ndarrays", "encode_ndarrays", "loads", "dumps"]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA

#: mshadow's type flags (``mshadow/base.h``); 12 (bfloat16) has no numpy dtype.
FLAG_TO_DTYPE = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32,
                 5: np.int8, 6: np.int64, 7: np.bool_, 8: np.int16, 9: np.uint16,
                 10: np.uint32, 11: np.uint64}
DTYPE_TO_FLAG = {np.dtype(v): k for k, v in FLAG_TO_DTYPE.items()}
_STYPES = {1: "row_sparse", 2: "csr"}
_CPU = 1

Loaded = Union[List[np.ndarray], Dict[str, np.ndarray]]


class NDArrayFormatError(CloudrecError, ValueError):
    """Bytes that are not (or not entirely) an MXNet NDArray file."""

    def __init__(self, message: str, url: Optional[str] = None,
                 offset: Optional[int] = None) -> None:
        self.url, self.offset = url, offset
        where = ", ".join(p for p in (str(url) if url else "",
                                      f"offset {offset}" if offset is not None else "") if p)
        super().__init__(f"{message} ({where})" if where else message)


def is_ndarray_file(data: bytes) -> bool:
    """True when ``data`` starts with the NDArray list magic (what MXNet checks first)."""
    return len(data) >= 8 and struct.unpack_from("<Q", data, 0)[0] == LIST_MAGIC


class _Reader:
    def __init__(self, data: bytes, url: Optional[str]) -> None:
        self.buf, self.pos, self.url = memoryview(data), 0, url

    def take(self, fmt: str) -> Tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise NDArrayFormatError(f"truncated NDArray file: need {size} more bytes, "
                                     f"{len(self.buf) - self.pos} left", self.url, self.pos)
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.buf):
            raise NDArrayFormatError(f"truncated NDArray file: array data needs {size} bytes, "
                                     f"{len(self.buf) - self.pos} left", self.url, self.pos)
        out = bytes(self.buf[self.pos:self.pos + size])
        self.pos += size
        return out


def _read_array(r: _Reader) -> np.ndarray:
    start = r.pos
    (magic,) = r.take("<I")
    if magic in (V2_MAGIC, V3_MAGIC):
        (stype,) = r.take("<i")
        if stype != 0:
            raise NDArrayFormatError(
                f"sparse NDArray ({_STYPES.get(stype, f'storage type {stype}')}) is not "
                "supported; save it dense (tostype('default'))", r.url, start)
        if magic == V3_MAGIC:
            (ndim,) = r.take("<i")
            if ndim < 0:  # numpy-semantics "unknown shape": an empty array
                return np.zeros((0,), np.float32)
        else:
            (ndim,) = r.take("<I")
        if ndim > 32:
            raise NDArrayFormatError(f"corrupt NDArray: {ndim} dimensions", r.url, start)
        shape = r.take(f"<{ndim}q") if ndim else ()
        if ndim == 0 and magic == V2_MAGIC:  # legacy semantics: ndim 0 = none array
            return np.zeros((0,), np.float32)
    elif magic == V1_MAGIC:
        (ndim,) = r.take("<I")
        if ndim > 32:
            raise NDArrayFormatError(f"corrupt NDArray: {ndim} dimensions", r.url, start)
        shape = r.take(f"<{ndim}q") if ndim else ()
        if ndim == 0:
            return np.zeros((0,), np.float32)
    else:  # pre-V1: the word just read is ndim, dims are uint32
        ndim = magic
        if ndim > 32:
            raise NDArrayFormatError(f"not an NDArray: bad array magic 0x{magic:08x}",
                                     r.url, start)
        shape = r.take(f"<{ndim}I") if ndim else ()
        if ndim == 0:
            return np.zeros((0,), np.float32)
    if len(shape) > 32:
        raise NDArrayFormatError(f"corrupt NDArray: {len(shape)} dimensions", r.url, start)
    if any(d < 0 for d in shape):
        raise NDArrayFormatError(f"negative dimension in shape {tuple(shape)}", r.url, start)
    r.take("<ii")  # context: device type, id (loaded onto the CPU whatever it was)
    (flag,) = r.take("<i")
    if flag not in FLAG_TO_DTYPE:
        name = "bfloat16" if flag == 12 else f"type flag {flag}"
        raise NDArrayFormatError(f"NDArray dtype {name} has no numpy equivalent", r.url, start)
    dtype = np.dtype(FLAG_TO_DTYPE[flag]).newbyteorder("<")
    count = math.prod(int(d) for d in shape)  # Python ints: a corrupt shape cannot overflow
    data = r.raw(count * dtype.itemsize)
    try:
        return np.frombuffer(data, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    except ValueError:  # e.g. (0, 2**62): no bytes, but more elements than numpy can address
        raise NDArrayFormatError(f"corrupt shape {tuple(shape)}", r.url, start) from None


def decode_ndarrays(data: bytes, url: Optional[str] = None) -> Tuple[List[np.ndarray], List[str]]:
    """The arrays and names (empty list when unnamed) of an NDArray file's bytes."""
    r = _Reader(data, url)
    if len(data) < 8 or not is_ndarray_file(data):
        raise NDArrayFormatError("not an MXNet NDArray file (no list magic 0x112)", url, 0)
    r.take("<QQ")  # magic, reserved
    (count,) = r.take("<Q")
    if count > len(data):  # every array takes bytes: a huge count is corruption
        raise NDArrayFormatError(f"corrupt NDArray file: claims {count} arrays", url, 16)
    arrays = [_read_array(r) for _ in range(count)]
    (n_names,) = r.take("<Q")
    if n_names not in (0, count):
        raise NDArrayFormatError(f"corrupt NDArray file: {n_names} names for {count} arrays",
                                 url, r.pos - 8)
    names = []
    for _ in range(n_names):
        (length,) = r.take("<Q")
        try:
            names.append(r.raw(length).decode("utf-8"))
        except UnicodeDecodeError:
            raise NDArrayFormatError("array name is not UTF-8", url, r.pos - length) from None
    if r.pos != len(data):
        raise NDArrayFormatError(f"{len(data) - r.pos} unexpected bytes after the NDArray list",
                                 url, r.pos)
    return arrays, names


def _encode_array(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    flag = DTYPE_TO_FLAG.get(arr.dtype.newbyteorder("="))
    if flag is None:
        raise NDArrayFormatError(f"dtype {arr.dtype} cannot be stored in an NDArray file "
                                 f"(supported: {sorted(str(np.dtype(d)) for d in DTYPE_TO_FLAG)})")
    if arr.ndim == 0:  # only numpy-shape V3 arrays can be 0-d
        head = struct.pack("<Iii", V3_MAGIC, 0, 0)
    else:
        head = struct.pack(f"<IiI{arr.ndim}q", V2_MAGIC, 0, arr.ndim, *arr.shape)
    body = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return head + struct.pack("<iii", _CPU, 0, flag) + body


def encode_ndarrays(arrays: Sequence[np.ndarray], names: Sequence[str] = ()) -> bytes:
    """NDArray file bytes of ``arrays`` (with ``names`` for a dict, as ``mx.nd.save``)."""
    if names and len(names) != len(arrays):
        raise ValueError(f"{len(names)} names for {len(arrays)} arrays")
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    parts += [_encode_array(a) for a in arrays]
    parts.append(struct.pack("<Q", len(names)))
    for name in names:
        raw = str(name).encode("utf-8")
        parts.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(parts)


def loads(data: bytes, url: Optional[str] = None) -> Loaded:
    """What ``mx.nd.load`` returns: a dict when the file has names, else a list."""
    arrays, names = decode_ndarrays(data, url)
    if names:
        return dict(zip(names, arrays))
    return arrays


def dumps(obj: Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]) -> bytes:
    """What ``mx.nd.save`` writes for one array, a list of arrays or a dict name -> array."""
    if isinstance(obj, np.ndarray) or hasattr(obj, "asnumpy"):
        obj = [obj]
    if isinstance(obj, Mapping):
        for k in obj:
            if not isinstance(k, str):
                raise ValueError(f"NDArray dict keys must be str, got {type(k).__name__}")
        return encode_ndarrays([_plain(v) for v in obj.values()], list(obj.keys()))
    if isinstance(obj, (list, tuple)):
        return encode_ndarrays([_plain(v) for v in obj])
    raise ValueError("data needs to either be a NDArray, dict of (str, NDArray) pairs "
                     f"or a list of NDarrays, got {type(obj).__name__}")


def _plain(v: object) -> np.ndarray:
    if hasattr(v, "asnumpy"):
        v = v.asnumpy()
    if isinstance(v, np.generic):  # a numpy scalar: a 0-d array
        v = np.asarray(v)
    if not isinstance(v, np.ndarray):
        raise ValueError(f"expected an array, got {type(v).__name__}")
    return v.view(np.ndarray) if type(v) is not np.ndarray else v
