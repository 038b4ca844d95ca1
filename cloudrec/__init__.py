"""cloudrec: MXNet's image data IO (RecordIO, im2rec, ImageRecordIter, ImageIter,
ImageDetIter) without MXNet, reading from any fsspec URL."""
from cloudrec.errors import CloudrecError
from cloudrec import recordio
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, MXRecordIO, pack, pack_img, unpack, unpack_img

from cloudrec.config import load_config

__version__ = "0.1.0"

__all__ = ["CloudrecError", "recordio", "IRHeader", "MXRecordIO", "MXIndexedRecordIO",
           "pack", "unpack", "pack_img", "unpack_img", "load_config", "__version__"]
