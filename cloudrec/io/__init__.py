"""MXNet's ``mx.io`` data iterator API in numpy: DataDesc, DataBatch, DataIter and friends."""
from cloudrec.io.base import DataBatch, DataDesc, DataIter

__all__ = ["DataDesc", "DataBatch", "DataIter"]
