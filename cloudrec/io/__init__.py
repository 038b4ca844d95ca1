"""MXNet's ``mx.io`` data iterator API in numpy: DataDesc, DataBatch, DataIter, NDArrayIter,
PrefetchingIter, ResizeIter (ImageRecordIter lives in ``cloudrec.iterators``)."""
from cloudrec.io.base import DataBatch, DataDesc, DataIter
from cloudrec.io.ndarray_iter import NDArrayIter
from cloudrec.io.prefetch import PrefetchingIter, ResizeIter

__all__ = ["DataDesc", "DataBatch", "DataIter", "NDArrayIter", "PrefetchingIter", "ResizeIter"]


def __getattr__(name):  # lazy: cloudrec.iterators imports cloudrec.io.base
    if name in ("ImageRecordIter", "ImageRecordUInt8Iter", "ImageRecordInt8Iter"):
        import cloudrec.iterators as _it
        return getattr(_it, name)
    raise AttributeError(f"module 'cloudrec.io' has no attribute {name!r}")
