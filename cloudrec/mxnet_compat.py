"""One-import port of MXNet data-loading code: ``from cloudrec import mxnet_compat as mx``.

Covers what loaders that keep MXNet only to read `.rec` files use:
``mx.recordio`` (MXRecordIO, MXIndexedRecordIO, IRHeader, pack, unpack,
pack_img, unpack_img), ``mx.image`` / ``mx.img`` (imdecode/imread/resize/crop
helpers, imrotate/random_rotate, augmenters, CreateAugmenter, ImageIter),
``mx.nd`` (``array``, ``zeros``, ``save``/``load`` in MXNet's NDArray file
format, ...; an ``NDArray`` that is a numpy array with ``asnumpy()``),
``mx.io`` (DataBatch, DataDesc, DataIter, NDArrayIter, PrefetchingIter,
ResizeIter, ImageRecordIter), ``mx.gluon.data`` (datasets, DataLoader,
vision.transforms; see :mod:`cloudrec.gluon`), ``mx.random.seed``,
``mx.cpu()``/``mx.gpu()`` and ``mx.base.MXNetError``.

MXNet's conventions that legacy code depends on hold here (and only here;
cloudrec's own API stays strict): ImageRecordIter and its variants warn about
unknown keywords, naming the closest known one, and ignore them; errors are
instances of ``mx.base.MXNetError`` as well as of their cloudrec/Python class.

Paths may be any fsspec URL; ``mx.storage_options`` (a dict) is applied to
every file this module opens when the caller passes none, so legacy code
reads from S3/HDFS without edits beyond the import.
"""
from __future__ import annotations

import random as _pyrandom
import sys
import types
from typing import Any, Dict

import numpy as np

from cloudrec import image as _image
from cloudrec import io as _io
from cloudrec import recordio as _recordio
from cloudrec.image import ops as _ops
from cloudrec.mxnet_base import (Context, CSRNDArray, MXNetError, NDArray, as_nd, as_np, cpu,
                                 current_context, drop_unknown_kwargs, gpu, mxnet_errors,
                                 nd_array, nd_load, nd_load_frombuffer, nd_save, read_url)

__all__ = ["recordio", "image", "img", "nd", "ndarray", "io", "base", "random", "gluon",
           "NDArray", "cpu", "gpu", "Context", "storage_options", "MXNetError"]

#: fsspec options used by every reader this module opens when none are given.
storage_options: Dict[str, Any] = {}

_nd, _np = as_nd, as_np  # the names the examples and older tests use


def _module(name: str, doc: str) -> types.ModuleType:
    mod = types.ModuleType(f"{__name__}.{name}", doc)
    sys.modules[mod.__name__] = mod
    return mod


# ------------------------------------------------------------------------------ mx.nd
nd = _module("nd", "MXNet's ``mx.nd`` essentials on numpy.")
ndarray = nd
nd.NDArray = NDArray
nd.CSRNDArray = CSRNDArray


nd.array = nd_array
nd.save = nd_save
nd.load = nd_load
nd.load_frombuffer = nd_load_frombuffer
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


# ------------------------------------------------------------------------------ mx.random
random = _module("random", "``mx.random.seed``: seeds what the shims draw from.")


def _seed(seed_state: int, ctx: Any = "all") -> None:
    """Seed Python's and numpy's global generators and the Gluon transforms' generator."""
    _pyrandom.seed(seed_state)
    np.random.seed(seed_state & 0xFFFFFFFF)
    from cloudrec.gluon import rng as _grng
    _grng.seed(seed_state)


random.seed = _seed


# ------------------------------------------------------------------------------ mx.recordio
recordio = _module("recordio", "MXNet's ``mx.recordio`` on any fsspec URL.")
from cloudrec.mxnet_recordio import MXIndexedRecordIO, MXRecordIO  # noqa: E402

recordio.MXRecordIO = MXRecordIO
recordio.MXIndexedRecordIO = MXIndexedRecordIO
recordio.IRHeader = _recordio.IRHeader
recordio.pack = mxnet_errors(_recordio.pack)
recordio.unpack = mxnet_errors(_recordio.unpack)
recordio.pack_img = mxnet_errors(_recordio.pack_img)
recordio.unpack_img = mxnet_errors(_recordio.unpack_img)


# ------------------------------------------------------------------------------ mx.image
image = _module("image", "MXNet's ``mx.image`` returning NDArray-like numpy arrays.")
img = image
image.image = image  # ``mx.image.image.imread``, ``mx.img.image.ImageIter``: MXNet's submodule
image.detection = image
sys.modules[f"{image.__name__}.image"] = image
sys.modules[f"{image.__name__}.detection"] = image


def _wrap_fn(fn):
    def call(*args, **kwargs):
        args = [_np(a) for a in args]
        kwargs = {k: _np(v) for k, v in kwargs.items()}
        return _nd(fn(*args, **kwargs))
    call.__name__ = fn.__name__
    call.__doc__ = fn.__doc__
    return mxnet_errors(call)


def _imread(filename: str, flag: int = 1, to_rgb: bool = True, out: Any = None, **kw: Any):
    """``mx.image.imread`` of a local path or any fsspec URL (``mx.storage_options`` apply)."""
    if "://" not in str(filename):
        return _image.imread(filename, flag, to_rgb, out, **kw)
    try:
        data = read_url(filename)
    except FileNotFoundError:
        raise FileNotFoundError(2, f"Imread: '{filename}' couldn't open file",
                                filename) from None
    return _image.imdecode(data, flag, to_rgb, out, url=filename, **kw)


for _name in ("imdecode", "imresize", "resize_short", "fixed_crop", "center_crop",
              "random_crop", "random_size_crop", "color_normalize", "copyMakeBorder"):
    setattr(image, _name, _wrap_fn(getattr(_image, _name)))
image.imread = _wrap_fn(_imread)
image.imread.__name__ = "imread"
image.imrotate = _wrap_fn(_ops.imrotate)


def _random_rotate(src: Any, angle_limits: Any, zoom_in: bool = False, zoom_out: bool = False):
    """``mx.image.random_rotate``: angles from the generator ``mx.random.seed`` seeds."""
    from cloudrec.gluon import rng as _grng
    return _ops.random_rotate(src, angle_limits, zoom_in, zoom_out, rng=_grng.get())


_random_rotate.__doc__ = _ops.random_rotate.__doc__
image.random_rotate = _wrap_fn(_random_rotate)
image.random_rotate.__name__ = "random_rotate"
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


@mxnet_errors
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
    @mxnet_errors
    def next(self):
        return _wrap_batch(cls.next(self))

    @mxnet_errors
    def __init__(self, *args, **kwargs):
        if inject_so and kwargs.get("storage_options") is None and globals()["storage_options"]:
            kwargs["storage_options"] = dict(globals()["storage_options"])
        cls.__init__(self, *args, **kwargs)

    body = {"next": next, "__next__": next, "__init__": __init__, "__doc__": cls.__doc__,
            "__module__": mod_name}
    if hasattr(cls, "reset"):
        body["reset"] = mxnet_errors(cls.reset)
    return type(cls.__name__, (cls,), body)


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


@mxnet_errors
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

_RECORD_ITERS = ("ImageRecordIter", "ImageRecordUInt8Iter", "ImageRecordInt8Iter")


_WRAPPED_ITER_TYPES: Dict[type, type] = {}


def _shim_iter_type(cls: type) -> type:
    if cls not in _WRAPPED_ITER_TYPES:
        _WRAPPED_ITER_TYPES[cls] = _wrap_iter_class(cls, io.__name__)
    return _WRAPPED_ITER_TYPES[cls]


def _record_iter_factory(name: str):
    """``mx.io.<name>``: unknown keywords warn and are ignored, errors are MXNetError.

    ``ImageRecordIter`` stays a class (``isinstance`` works); the deprecated
    ``ImageRecordUInt8Iter``/``ImageRecordInt8Iter`` are functions, as in cloudrec."""
    from cloudrec import iterators
    from cloudrec.iterators.record_params import known_keywords
    target = getattr(iterators, name)

    def clean(kwargs: Dict[str, Any]) -> Dict[str, Any]:
        kwargs = drop_unknown_kwargs(f"mx.io.{name}", kwargs, known_keywords(), stacklevel=4)
        if kwargs.get("storage_options") is None and globals()["storage_options"]:
            kwargs["storage_options"] = dict(globals()["storage_options"])
        return kwargs

    if isinstance(target, type):
        base_cls = _shim_iter_type(target)

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if args:
                raise TypeError(f"{name} can only accept keyword arguments")
            base_cls.__init__(self, **clean(kwargs))

        return type(name, (base_cls,), {"__init__": __init__, "__doc__": target.__doc__,
                                        "__module__": io.__name__})

    def make(*args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError(f"{name} can only accept keyword arguments")
        it = mxnet_errors(target)(**clean(kwargs))
        it.__class__ = _shim_iter_type(type(it))
        return it

    make.__name__ = make.__qualname__ = name
    make.__doc__ = target.__doc__
    return make


def _io_getattr(name: str) -> Any:
    if name in _RECORD_ITERS:
        made = _record_iter_factory(name)
        setattr(io, name, made)
        return made
    raise AttributeError(f"module {io.__name__!r} has no attribute {name!r}")


io.__getattr__ = _io_getattr

# ------------------------------------------------------------------------------ mx.base
base = _module("base", "MXNet's ``mx.base`` names that data code catches.")
base.MXNetError = MXNetError
context = _module("context", "MXNet's ``mx.context``.")
context.Context, context.cpu, context.gpu = Context, cpu, gpu
context.current_context = current_context
context.cpu_pinned = lambda device_id=0: Context("cpu_pinned", device_id)
context.num_gpus = lambda: 0
nd.waitall = lambda: None
sys.modules[f"{__name__}.ndarray"] = nd

# ------------------------------------------------------------------------------ mx.gluon
from cloudrec import gluon  # noqa: E402  (needs the names above: it builds on mxnet_base)

for _sub in ("", ".data", ".data.dataset", ".data.sampler", ".data.dataloader", ".data.vision",
             ".data.vision.datasets", ".data.vision.transforms", ".utils"):
    sys.modules[f"{__name__}.gluon{_sub}"] = sys.modules[f"cloudrec.gluon{_sub}"]
