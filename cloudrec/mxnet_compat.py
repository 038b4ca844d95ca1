"""One-import port of MXNet data-loading code: ``from cloudrec import mxnet_compat as mx``.

Covers what loaders that keep MXNet only to read `.rec` files use:
``mx.recordio`` (MXRecordIO, MXIndexedRecordIO, IRHeader, pack, unpack,
pack_img, unpack_img), ``mx.image`` (imdecode/imread/resize/crop helpers,
augmenters, CreateAugmenter, ImageIter), ``mx.nd`` (``array``, ``zeros``,
...; an ``NDArray`` that is a numpy array with ``asnumpy()``), ``mx.io``
(DataBatch, DataDesc, DataIter, NDArrayIter, PrefetchingIter, ResizeIter,
ImageRecordIter), ``mx.cpu()``/``mx.gpu()`` and ``mx.base.MXNetError``.

Paths may be any fsspec URL; ``mx.storage_options`` (a dict) is applied to
every file this module opens when the caller passes none, so legacy code
reads from S3/HDFS without edits beyond the import.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Dict, Optional

import numpy as np

from cloudrec import image as _image
from cloudrec import io as _io
from cloudrec import recordio as _recordio
from cloudrec.errors import CloudrecError

__all__ = ["recordio", "image", "nd", "ndarray", "io", "base", "NDArray", "cpu", "gpu",
           "Context", "storage_options", "MXNetError"]

#: fsspec options used by every reader this module opens when none are given.
storage_options: Dict[str, Any] = {}

MXNetError = CloudrecError


# ------------------------------------------------------------------------------ context
class Context:
    """A device name; everything here lives on the CPU."""

    def __init__(self, device_type: str = "cpu", device_id: int = 0) -> None:
        self.device_type, self.device_id = device_type, device_id

    def __repr__(self) -> str:
        return f"{self.device_type}({self.device_id})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Context) and (self.device_type, self.device_id) == (
            other.device_type, other.device_id)

    def __hash__(self) -> int:
        return hash((self.device_type, self.device_id))


def cpu(device_id: int = 0) -> Context:
    return Context("cpu", device_id)


def gpu(device_id: int = 0) -> Context:
    return Context("gpu", device_id)


def current_context() -> Context:
    return cpu()


# ------------------------------------------------------------------------------ NDArray
class NDArray(np.ndarray):
    """A numpy array with MXNet's NDArray conveniences (``asnumpy``, ``context``, ...)."""

    def __new__(cls, data: Any) -> "NDArray":
        return np.asarray(data).view(cls)

    def asnumpy(self) -> np.ndarray:
        """A plain numpy copy, as MXNet's ``asnumpy``."""
        return np.array(self.view(np.ndarray), copy=True)

    def asscalar(self) -> Any:
        if self.size != 1:
            raise ValueError("The current array is not a scalar")
        return self.view(np.ndarray).reshape(-1)[0]

    @property
    def context(self) -> Context:
        return cpu()

    ctx = context

    @property
    def stype(self) -> str:
        return "default"

    def as_in_context(self, context: Context) -> "NDArray":
        return self

    def copyto(self, other: Any) -> "NDArray":
        if isinstance(other, np.ndarray):
            other[...] = self
            return other
        return self.copy()

    def wait_to_read(self) -> None:
        pass

    def as_np_ndarray(self) -> np.ndarray:
        return self.view(np.ndarray)


def _nd(x: Any) -> Any:
    """Wrap numpy results as NDArray (tuples element-wise); leave others alone."""
    if isinstance(x, np.ndarray):
        return x.view(NDArray)
    if isinstance(x, tuple):
        return tuple(_nd(v) for v in x)
    if isinstance(x, list):
        return [_nd(v) for v in x]
    return x


def _np(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, NDArray) else x


def _module(name: str, doc: str) -> types.ModuleType:
    mod = types.ModuleType(f"{__name__}.{name}", doc)
    sys.modules[mod.__name__] = mod
    return mod


# ------------------------------------------------------------------------------ mx.nd
nd = _module("nd", "MXNet's ``mx.nd`` essentials on numpy.")
ndarray = nd
nd.NDArray = NDArray


def _array(source: Any, ctx: Optional[Context] = None, dtype: Any = None) -> NDArray:
    if isinstance(source, np.ndarray):
        arr = np.array(source, dtype=dtype or source.dtype)
    else:
        arr = np.array(source, dtype=dtype or np.float32)
    return arr.view(NDArray)


nd.array = _array
nd.zeros = lambda shape, ctx=None, dtype="float32", **kw: np.zeros(shape, dtype).view(NDArray)
nd.ones = lambda shape, ctx=None, dtype="float32", **kw: np.ones(shape, dtype).view(NDArray)
nd.empty = lambda shape, ctx=None, dtype="float32": np.empty(shape, dtype).view(NDArray)
nd.full = lambda shape, val, ctx=None, dtype="float32", **kw: np.full(shape, val, dtype).view(NDArray)
nd.arange = lambda start, stop=None, step=1.0, repeat=1, ctx=None, dtype="float32": np.repeat(
    np.arange(start, stop, step, dtype=dtype), repeat).view(NDArray)
nd.concat = lambda *data, dim=1, **kw: np.concatenate([_np(d) for d in data], axis=dim).view(NDArray)
nd.concatenate = lambda arrays, axis=0, always_copy=True: np.concatenate(
    [_np(a) for a in arrays], axis=axis).view(NDArray)
nd.stack = lambda *data, axis=0, **kw: np.stack([_np(d) for d in data], axis=axis).view(NDArray)
nd.transpose = lambda data, axes=None, **kw: np.ascontiguousarray(
    np.transpose(_np(data), axes or None)).view(NDArray)
nd.flip = lambda data, axis, **kw: np.ascontiguousarray(np.flip(_np(data), axis)).view(NDArray)
nd.dot = lambda lhs, rhs, **kw: np.dot(_np(lhs), _np(rhs)).view(NDArray)
nd.clip = lambda data, a_min, a_max, **kw: np.clip(_np(data), a_min, a_max).view(NDArray)
nd.waitall = lambda: None


# ------------------------------------------------------------------------------ mx.recordio
recordio = _module("recordio", "MXNet's ``mx.recordio`` on any fsspec URL.")


class MXRecordIO(_recordio.MXRecordIO):
    """``mx.recordio.MXRecordIO``; ``mx.storage_options`` apply when none are given."""

    def __init__(self, uri: str, flag: str, storage_options: Optional[Dict[str, Any]] = None
                 ) -> None:
        so = storage_options if storage_options is not None else dict(globals()["storage_options"])
        super().__init__(uri, flag, storage_options=so)


class MXIndexedRecordIO(_recordio.MXIndexedRecordIO):
    """``mx.recordio.MXIndexedRecordIO``; ``mx.storage_options`` apply when none are given."""

    def __init__(self, idx_path: str, uri: str, flag: str, key_type: Any = int,
                 storage_options: Optional[Dict[str, Any]] = None) -> None:
        so = storage_options if storage_options is not None else dict(globals()["storage_options"])
        super().__init__(idx_path, uri, flag, key_type=key_type, storage_options=so)


recordio.MXRecordIO = MXRecordIO
recordio.MXIndexedRecordIO = MXIndexedRecordIO
recordio.IRHeader = _recordio.IRHeader
recordio.pack = _recordio.pack
recordio.unpack = _recordio.unpack
recordio.pack_img = _recordio.pack_img
recordio.unpack_img = _recordio.unpack_img


# ------------------------------------------------------------------------------ mx.image
image = _module("image", "MXNet's ``mx.image`` returning NDArray-like numpy arrays.")
img = image


def _wrap_fn(fn):
    def call(*args, **kwargs):
        args = [_np(a) for a in args]
        kwargs = {k: _np(v) for k, v in kwargs.items()}
        return _nd(fn(*args, **kwargs))
    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call


for _name in ("imdecode", "imread", "imresize", "resize_short", "fixed_crop", "center_crop",
              "random_crop", "random_size_crop", "color_normalize", "copyMakeBorder"):
    setattr(image, _name, _wrap_fn(getattr(_image, _name)))
image.scale_down = _image.scale_down


def _wrap_aug_class(cls):
    def __call__(self, src, rng=None):
        return _nd(cls.__call__(self, _np(src), rng))
    return type(cls.__name__, (cls,), {"__call__": __call__, "__doc__": cls.__doc__,
                                       "__module__": image.__name__})


class _NDAug(_image.Augmenter):
    """Wrap a cloudrec augmenter so that it returns NDArrays."""

    def __init__(self, aug: Any) -> None:
        self.__dict__.update(aug.__dict__)
        self._aug = aug

    def dumps(self):
        return self._aug.dumps()

    def __call__(self, src, rng=None):
        return _nd(self._aug(_np(src), rng))


for _name in ("Augmenter", "SequentialAug", "RandomOrderAug", "ResizeAug", "ForceResizeAug",
              "RandomCropAug", "RandomSizedCropAug", "CenterCropAug", "BrightnessJitterAug",
              "ContrastJitterAug", "SaturationJitterAug", "HueJitterAug", "ColorJitterAug",
              "LightingAug", "ColorNormalizeAug", "RandomGrayAug", "HorizontalFlipAug",
              "CastAug"):
    _cls = getattr(_image, _name)
    setattr(image, _name, _cls if _name == "Augmenter" else _wrap_aug_class(_cls))


def CreateAugmenter(data_shape, **kwargs):
    """``mx.image.CreateAugmenter``: the same list, whose augmenters return NDArrays."""
    return [_NDAug(a) for a in _image.CreateAugmenter(data_shape, **kwargs)]


image.CreateAugmenter = CreateAugmenter


def _wrap_batch(batch: Any) -> Any:
    if batch is not None:
        batch.data = _nd(list(batch.data)) if batch.data is not None else None
        batch.label = _nd(list(batch.label)) if batch.label is not None else None
    return batch


def _wrap_iter_class(cls, mod_name: str, inject_so: bool = False):
    def next(self):
        return _wrap_batch(cls.next(self))

    def __init__(self, *args, **kwargs):
        if inject_so and kwargs.get("storage_options") is None and globals()["storage_options"]:
            kwargs["storage_options"] = dict(globals()["storage_options"])
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"next": next, "__next__": next, "__init__": __init__,
                                       "__doc__": cls.__doc__, "__module__": mod_name})


image.ImageIter = _wrap_iter_class(_image.ImageIter, image.__name__, inject_so=True)
image.ImageDetIter = _wrap_iter_class(_image.ImageDetIter, image.__name__, inject_so=True)


class _NDDetAug:
    """Wrap a detection augmenter so that ``aug(src, label)`` returns an NDArray image."""

    def __init__(self, aug: Any) -> None:
        self._aug = aug

    def dumps(self):
        return self._aug.dumps()

    def __call__(self, src, label, rng=None):
        out, lab = self._aug(_np(src), label, rng)
        return _nd(out), lab


def CreateDetAugmenter(data_shape, **kwargs):
    """``mx.image.CreateDetAugmenter``: the same list, whose augmenters return NDArrays."""
    return [_NDDetAug(a) for a in _image.CreateDetAugmenter(data_shape, **kwargs)]


image.CreateDetAugmenter = CreateDetAugmenter
for _name in ("DetAugmenter", "DetBorrowAug", "DetRandomSelectAug", "DetHorizontalFlipAug",
              "DetRandomCropAug", "DetRandomPadAug"):
    setattr(image, _name, getattr(_image, _name))


# ------------------------------------------------------------------------------ mx.io
io = _module("io", "MXNet's ``mx.io`` iterators returning NDArray-like batches.")
io.DataBatch = _io.DataBatch
io.DataDesc = _io.DataDesc
io.DataIter = _io.DataIter
io.NDArrayIter = _wrap_iter_class(_io.NDArrayIter, io.__name__)
io.PrefetchingIter = _wrap_iter_class(_io.PrefetchingIter, io.__name__)
io.ResizeIter = _io.ResizeIter


def _io_getattr(name: str) -> Any:
    if name in ("ImageRecordIter", "ImageRecordUInt8Iter", "ImageRecordInt8Iter"):
        from cloudrec import iterators
        cls = getattr(iterators, name)
        if isinstance(cls, type):
            wrapped = _wrap_iter_class(cls, io.__name__, inject_so=True)
        else:
            def wrapped(**kwargs: Any) -> Any:
                if kwargs.get("storage_options") is None and globals()["storage_options"]:
                    kwargs["storage_options"] = dict(globals()["storage_options"])
                it = cls(**kwargs)
                it.__class__ = _wrap_iter_class(type(it), io.__name__)
                return it
        setattr(io, name, wrapped)
        return wrapped
    raise AttributeError(f"module {io.__name__!r} has no attribute {name!r}")


io.__getattr__ = _io_getattr

# ------------------------------------------------------------------------------ mx.base
base = _module("base", "MXNet's ``mx.base`` names that data code catches.")
base.MXNetError = MXNetError
