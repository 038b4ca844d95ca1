"""``mx.gluon.data.vision``: image datasets and ``transforms``."""
from cloudrec.gluon.data.vision.datasets import ImageFolderDataset, ImageRecordDataset
from cloudrec.gluon.data.vision import transforms

__all__ = ["ImageRecordDataset", "ImageFolderDataset", "transforms"]
