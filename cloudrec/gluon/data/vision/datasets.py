"""Gluon's image datasets on any fsspec URL: ``ImageRecordDataset`` and ``ImageFolderDataset``."""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, List, Optional, Tuple

from cloudrec.format.irheader import unpack
from cloudrec.gluon.data.dataset import Dataset, RecordFileDataset
from cloudrec.image.decode import imdecode
from cloudrec.mxnet_base import NDArray, mxnet_errors, shim_storage_options

__all__ = ["ImageRecordDataset", "ImageFolderDataset"]

Transform = Optional[Callable[[Any, Any], Any]]


class ImageRecordDataset(RecordFileDataset):
    """``(image, label)`` per record of a `.rec` (MXNet's ``vision.ImageRecordDataset``).

    The image is RGB HWC uint8 (``flag=0``: gray, (H, W, 1)), the label the
    record header's (a float, or a float32 array for multi-label records).
    ``transform(image, label)`` returns the sample when given.
    """

    def __init__(self, filename: str, flag: int = 1, transform: Transform = None,
                 storage_options: Optional[dict] = None) -> None:
        super().__init__(filename, storage_options)
        self._flag = flag
        self._transform = transform

    @mxnet_errors
    def __getitem__(self, idx: int) -> Any:
        key = self._record.keys[idx]
        header, img = unpack(self._read(key))
        data = imdecode(img, self._flag, url=self.filename, key=key).view(NDArray)
        if self._transform is not None:
            return self._transform(data, header.label)
        return data, header.label


class ImageFolderDataset(Dataset):
    """Images in one sub-folder per class (MXNet's ``vision.ImageFolderDataset``).

    ``root/<class>/<image>``: classes are the sub-folders in sorted order
    (``synsets``; a folder's label is its position even when it holds no
    image), files in each are sorted; only ``.jpg``/``.jpeg``/``.png`` are
    used, anything else is skipped with a warning, as MXNet.  ``root`` may be
    any fsspec URL; ``items`` is ``[(url, label)]``.
    """

    _exts = [".jpg", ".jpeg", ".png"]

    @mxnet_errors
    def __init__(self, root: str, flag: int = 1, transform: Transform = None,
                 storage_options: Optional[dict] = None) -> None:
        self._root = str(root)
        self._flag = flag
        self._transform = transform
        self._so = shim_storage_options(storage_options)
        self.synsets: List[str] = []
        self.items: List[Tuple[str, int]] = []
        self._list_images()

    def _entries(self, url: str) -> List[Tuple[str, bool]]:
        """(name, is_dir) of a folder's entries, sorted by name."""
        if "://" not in url:
            return [(n, os.path.isdir(os.path.join(url, n))) for n in sorted(os.listdir(url))]
        from cloudrec.storage.fs import resolve
        fs, path = resolve(url, self._so)
        out = []
        for info in fs.ls(path, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            out.append((name, info.get("type") == "directory"))
        return sorted(out)

    def _join(self, base: str, name: str) -> str:
        if "://" not in base:
            return os.path.join(base, name)
        return base.rstrip("/") + "/" + name

    def _list_images(self) -> None:
        for folder, is_dir in self._entries(self._root):
            path = self._join(self._root, folder)
            if not is_dir:
                warnings.warn(f"Ignoring {path}, which is not a directory.", stacklevel=4)
                continue
            label = len(self.synsets)
            self.synsets.append(folder)
            for filename, sub_dir in self._entries(path):
                ext = os.path.splitext(filename)[1]
                if sub_dir or ext.lower() not in self._exts:
                    warnings.warn(f"Ignoring {self._join(path, filename)} of type {ext}. "
                                  f"Only support {', '.join(self._exts)}", stacklevel=4)
                    continue
                self.items.append((self._join(path, filename), label))

    @mxnet_errors
    def __getitem__(self, idx: int) -> Any:
        url, label = self.items[idx]
        img = imdecode(self._read(url), self._flag, url=url).view(NDArray)
        if self._transform is not None:
            return self._transform(img, label)
        return img, label

    def _read(self, url: str) -> bytes:
        if "://" not in url:
            with open(url, "rb") as f:
                return f.read()
        from cloudrec.storage.fs import resolve
        fs, path = resolve(url, self._so)
        with fs.open(path, "rb") as f:
            return f.read()

    def __len__(self) -> int:
        return len(self.items)

