"""``mx.recordio``'s reader classes for the shim: cloudrec's, raising MXNetError where MXNet
does, and taking ``mx.storage_options`` when no storage options are given."""
from __future__ import annotations

from typing import Any, Dict, Optional

from cloudrec import recordio as _recordio
from cloudrec.mxnet_base import mxnet_errors, shim_storage_options

__all__ = ["MXRecordIO", "MXIndexedRecordIO"]

_RECORDIO_METHODS = ("read", "write", "read_idx", "write_idx", "seek", "reset", "open", "close",
                     "tell")


def _erroring(cls: type, methods: tuple) -> Dict[str, Any]:
    return {m: mxnet_errors(getattr(cls, m)) for m in methods if hasattr(cls, m)}


class MXRecordIO(_recordio.MXRecordIO):
    """``mx.recordio.MXRecordIO``; ``mx.storage_options`` apply when none are given."""

    @mxnet_errors
    def __init__(self, uri: str, flag: str, storage_options: Optional[Dict[str, Any]] = None
                 ) -> None:
        super().__init__(uri, flag, storage_options=shim_storage_options(storage_options))


class MXIndexedRecordIO(_recordio.MXIndexedRecordIO):
    """``mx.recordio.MXIndexedRecordIO``; ``mx.storage_options`` apply when none are given."""

    @mxnet_errors
    def __init__(self, idx_path: str, uri: str, flag: str, key_type: Any = int,
                 storage_options: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(idx_path, uri, flag, key_type=key_type,
                         storage_options=shim_storage_options(storage_options))


for _cls in (MXRecordIO, MXIndexedRecordIO):
    for _m, _f in _erroring(_cls.__mro__[1], _RECORDIO_METHODS).items():
        setattr(_cls, _m, _f)
