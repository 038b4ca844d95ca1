"""How a batch's small arrays travel from a DataLoader worker to the main process: by value.

torch hands every tensor a worker yields to the main process through shared
memory: one file descriptor per tensor storage, passed by the worker's
resource-sharer thread over a Unix socket after an authentication handshake.
For a 38 MB image batch that is the right transport (no copy), but a batch
also carries a few arrays of 64 ids, flags or labels, and each of them costs
the same hand-over.  In a worker whose other threads hold the GIL (cache
downloads, decode threads), the sharer thread waits for the GIL at every step
of its handshake.  ``bench/worker_transfer.py`` measures it: 2 workers with
one busy thread each, 64 ids and 64 flags per batch as two tensors, as one
shared storage, and by value.

So in a DataLoader worker, :func:`small_tensor` wraps an array of at most
:data:`BY_VALUE_BYTES` in :class:`ByValue`, which pickles as its bytes and is
rebuilt as an ordinary ``torch.Tensor`` when the main process unpickles the
batch: the batch a user receives is unchanged (tensors of the same dtype,
shape and values).  Outside a worker (``num_workers=0``) it is a tensor at once.
Only whole batches a dataset yields are wrapped (:func:`by_value` for what a
``collate`` made): a per-sample item still goes through the DataLoader's own
collate in the worker, which needs tensors.
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = ["BY_VALUE_BYTES", "ByValue", "by_value", "small_tensor"]

#: arrays up to this size travel from a worker inside the pickled batch, not in shared memory
BY_VALUE_BYTES = 64 << 10


class ByValue:
    """An array on its way from a DataLoader worker: pickled as bytes, unpickled as a tensor."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array)

    def __reduce__(self) -> Tuple[Any, Tuple[bytes, str, Tuple[int, ...]]]:
        a = self.array
        return _rebuild, (a.tobytes(), a.dtype.str, tuple(a.shape))

    def __repr__(self) -> str:
        return f"ByValue({self.array.dtype}, shape={self.array.shape})"


def _rebuild(data: bytes, dtype: str, shape: Tuple[int, ...]) -> torch.Tensor:
    # bytearray: a writable buffer, so the tensor owns writable memory like from_numpy's
    return torch.from_numpy(np.frombuffer(bytearray(data), dtype=np.dtype(dtype)).reshape(shape))


def small_tensor(array: np.ndarray) -> Union[torch.Tensor, ByValue]:
    """``torch.from_numpy(array)`` (the array is the batch's own: no copy), or in a
    DataLoader worker, for a small array, a :class:`ByValue` that becomes that tensor in
    the main process."""
    if array.nbytes <= BY_VALUE_BYTES and get_worker_info() is not None:
        return ByValue(array)
    return torch.from_numpy(np.ascontiguousarray(array))


_PLAIN_DTYPES = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                 torch.float16, torch.float32, torch.float64}


def by_value(obj: Any) -> Any:
    """``obj`` (a collated batch: tensors in tuples, lists and dicts) with its small CPU
    tensors wrapped in :class:`ByValue` when running in a DataLoader worker; as it is
    elsewhere, and for anything else (large tensors, other types, tensors that need grad)."""
    if get_worker_info() is None:
        return obj
    return _wrap(obj)


def _wrap(obj: Any) -> Any:
    t = type(obj)
    if t is torch.Tensor:
        if (obj.device.type == "cpu" and obj.layout == torch.strided and obj.dtype in _PLAIN_DTYPES
                and not obj.requires_grad and obj.numel() * obj.element_size() <= BY_VALUE_BYTES):
            return ByValue(obj.numpy())
        return obj
    if t is tuple or t is list:
        return t(_wrap(x) for x in obj)
    if t is dict:
        return {k: _wrap(v) for k, v in obj.items()}
    return obj
