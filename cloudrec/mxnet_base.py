"""What the MXNet shims share: the numpy-backed ``NDArray``, contexts, ``MXNetError``, and the
two MXNet conventions legacy code relies on (unknown iterator keywords are ignored with a
warning; failures are ``MXNetError``).

``cloudrec.mxnet_compat`` (``mx``) and ``cloudrec.gluon`` (``mx.gluon``) both build on it;
cloudrec's own API keeps its strict keywords and its own exception classes.
"""
from __future__ import annotations

import difflib
import functools
import sys
import warnings
from typing import Any, Callable, Dict, Iterable, Optional, Type, TypeVar

import numpy as np

from cloudrec.errors import CloudrecError
from cloudrec.format import ndarray as _ndformat

__all__ = ["Context", "cpu", "gpu", "current_context", "NDArray", "CSRNDArray", "as_nd", "as_np",
           "MXNetError", "as_mxnet_error", "mxnet_errors", "drop_unknown_kwargs",
           "shim_storage_options", "read_url", "write_url", "nd_array", "nd_save", "nd_load",
           "nd_load_frombuffer"]

F = TypeVar("F", bound=Callable[..., Any])


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

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


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

    def expand_dims(self, axis: int) -> "NDArray":
        return np.expand_dims(self.view(np.ndarray), axis).view(NDArray)

    def tostype(self, stype: str) -> Any:
        if stype == "default":
            return self
        if stype == "csr":
            return CSRNDArray(self.view(np.ndarray))
        raise ValueError(f"unknown storage type {stype!r}")


def _csr_class() -> Optional[type]:
    try:
        import scipy.sparse as sp
    except ImportError:  # scipy is optional: CSR batches need it
        return None
    return sp.csr_matrix


_CSRBase = _csr_class() or object


class CSRNDArray(_CSRBase):  # type: ignore[misc, valid-type]
    """MXNet's CSRNDArray: a scipy ``csr_matrix`` with ``asnumpy``/``asscipy``/``stype``."""

    @property
    def stype(self) -> str:
        return "csr"

    @property
    def context(self) -> Context:
        return cpu()

    def asnumpy(self) -> np.ndarray:
        return np.asarray(self.toarray())

    def asscipy(self) -> Any:
        import scipy.sparse as sp
        return sp.csr_matrix(self)

    def tostype(self, stype: str) -> Any:
        if stype == "default":
            return NDArray(self.asnumpy())
        return self


def as_nd(x: Any) -> Any:
    """Wrap numpy results as NDArray (tuples/lists element-wise, CSR as CSRNDArray)."""
    if isinstance(x, NDArray) or isinstance(x, CSRNDArray):
        return x
    if isinstance(x, np.ndarray):
        return x.view(NDArray)
    if isinstance(x, tuple):
        return tuple(as_nd(v) for v in x)
    if isinstance(x, list):
        return [as_nd(v) for v in x]
    if _CSRBase is not object and isinstance(x, _CSRBase):
        return CSRNDArray(x)
    return x


def as_np(x: Any) -> Any:
    """The plain numpy view of an NDArray; anything else unchanged."""
    return x.view(np.ndarray) if isinstance(x, NDArray) else x


# ------------------------------------------------------------------------------ errors
class MXNetError(RuntimeError):
    """MXNet's ``mx.base.MXNetError``.  Errors raised through the shims where MXNet raised an
    MXNetError are instances of it *and* of the cloudrec/Python class they started as, so
    both ``except mx.base.MXNetError`` and ``except cloudrec.errors.ConfigError`` work."""


_MIXED: Dict[type, type] = {}

#: What the shims turn into MXNetError: cloudrec's own errors, file/OS errors, bad values.
TRANSLATED = (CloudrecError, OSError, ValueError)


def _mixed_class(cls: type) -> type:
    mixed = _MIXED.get(cls)
    if mixed is None:
        mixed = type(cls.__name__, (cls, MXNetError),
                     {"__module__": cls.__module__, "__doc__": cls.__doc__,
                      "__reduce__": _reduce_mixed})
        _MIXED[cls] = mixed
    return mixed


def _reduce_mixed(self: BaseException) -> Any:
    """Pickle a mixed error by its original class (DataLoader workers send errors back)."""
    orig = type(self).__mro__[1]
    return _remake_mixed, (orig, self.args, dict(getattr(self, "__dict__", {})))


def _remake_mixed(orig: type, args: tuple, state: Dict[str, Any]) -> BaseException:
    mixed = _mixed_class(orig)
    new = mixed.__new__(mixed, *args)
    if isinstance(new, OSError):
        OSError.__init__(new, *args)
    new.args = args
    new.__dict__.update(state)
    return new


def as_mxnet_error(exc: BaseException) -> BaseException:
    """``exc`` as an instance of (its class, MXNetError), same args, attributes and traceback."""
    if isinstance(exc, MXNetError) or not isinstance(exc, TRANSLATED):
        return exc
    mixed = _mixed_class(type(exc))
    try:
        new = mixed.__new__(mixed, *exc.args)
    except Exception:  # a constructor that needs other arguments: keep the original
        return exc
    if isinstance(exc, OSError):  # OSError parses (errno, strerror, filename) in __init__
        if exc.errno is not None and exc.filename is not None:
            OSError.__init__(new, exc.errno, exc.strerror, exc.filename)
        else:
            OSError.__init__(new, *exc.args)
    new.args = exc.args
    new.__dict__.update(getattr(exc, "__dict__", {}))
    new.__cause__, new.__context__ = exc.__cause__, exc.__context__
    new.__suppress_context__ = exc.__suppress_context__
    return new.with_traceback(exc.__traceback__)


def mxnet_errors(fn: F) -> F:
    """Decorate a shim function so that what it raises is also an MXNetError (see above)."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TRANSLATED as exc:
            new = as_mxnet_error(exc)
            if new is exc:
                raise
            raise new from None
    return call  # type: ignore[return-value]


# ------------------------------------------------------------------------------ keywords
def drop_unknown_kwargs(owner: str, kwargs: Dict[str, Any], known: Iterable[str],
                        stacklevel: int = 3) -> Dict[str, Any]:
    """MXNet's C++ iterators ignore keywords they do not know; the shims do too, with a
    ``UserWarning`` naming the closest known keyword (MXNet's own CIFAR test passes the
    typo ``and_mirror``).  Returns the kwargs without the unknown ones."""
    known = set(known)
    out = {}
    for k, v in kwargs.items():
        if k in known:
            out[k] = v
            continue
        close = difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings.warn(f"{owner}: unknown keyword argument {k!r} ignored{hint} (as MXNet does; "
                      "cloudrec's own API refuses it)", UserWarning, stacklevel=stacklevel)
    return out


def shim_storage_options(given: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``given`` when the caller passed some, else a copy of ``mx.storage_options``."""
    if given is not None:
        return given
    mod = sys.modules.get("cloudrec.mxnet_compat")
    return dict(getattr(mod, "storage_options", None) or {}) if mod is not None else {}


def mixed_error_classes() -> Dict[Type[BaseException], type]:
    """The (original, MXNetError) classes made so far (for tests and introspection)."""
    return dict(_MIXED)


# ------------------------------------------------------------------------------ mx.nd I/O
def read_url(url: str) -> bytes:
    """The bytes at ``url`` (``mx.storage_options`` apply)."""
    from cloudrec.storage.fs import resolve
    fs, path = resolve(url, shim_storage_options())
    with fs.open(path, "rb") as f:
        return f.read()


def write_url(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` (``mx.storage_options`` apply)."""
    from cloudrec.storage.fs import resolve
    fs, path = resolve(url, shim_storage_options())
    with fs.open(path, "wb") as f:
        f.write(data)


def nd_array(source: Any, ctx: Optional[Context] = None, dtype: Any = None) -> NDArray:
    """``mx.nd.array``: float32 unless ``dtype`` is given or ``source`` is an NDArray (whose
    dtype it keeps) -- so a uint8 *numpy* array becomes float32, as in MXNet."""
    if isinstance(source, NDArray):
        arr = np.array(source.view(np.ndarray), dtype=dtype or source.dtype)
    else:
        try:
            arr = np.array(source, dtype=dtype or np.float32)
        except (TypeError, ValueError):
            raise TypeError("source_array must be array like object") from None
    return arr.view(NDArray)


@mxnet_errors
def nd_save(fname: str, data: Any) -> None:
    """``mx.nd.save``: one array, a list of arrays or a dict str -> array, to any URL."""
    write_url(fname, _ndformat.dumps(data))


@mxnet_errors
def nd_load(fname: str) -> Any:
    """``mx.nd.load``: a dict name -> NDArray when the file has names, else a list."""
    return _load_frombuffer(read_url(fname), fname)


def _load_frombuffer(buf: bytes, url: Optional[str] = None) -> Any:
    out = _ndformat.loads(bytes(buf), url)
    if isinstance(out, dict):
        return {k: v.view(NDArray) for k, v in out.items()}
    return [v.view(NDArray) for v in out]


nd_load_frombuffer = mxnet_errors(_load_frombuffer)
