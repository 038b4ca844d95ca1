"""``NDArrayIter``: batches over in-memory arrays, with MXNet's pad / discard / roll_over rules.

Counts, pads and the roll-over cursor arithmetic follow ``mx.io.NDArrayIter``
1.9.1 (spec §3.4); arrays are numpy.  Shuffling draws from a numpy Generator
(``seed=``), not from numpy's global state.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from cloudrec.io.base import DataBatch, DataDesc, DataIter

__all__ = ["NDArrayIter"]

ArrayInput = Union[None, np.ndarray, Sequence[Any], Dict[str, Any]]


def _h5py_dataset_class() -> Optional[type]:
    try:
        import h5py  # optional: NDArrayIter reads h5py datasets lazily when it is installed
    except ImportError:
        return None
    return h5py.Dataset


def _is_sparse(v: Any) -> bool:
    try:
        import scipy.sparse as sp  # optional, as in MXNet
    except ImportError:
        return False
    return sp.issparse(v)


class _H5Rows:
    """An h5py dataset read lazily, rows in ``order`` (h5py reads increasing indices only)."""

    def __init__(self, ds: Any, order: Optional[np.ndarray] = None) -> None:
        self.ds = ds
        self.order = order
        self.shape = tuple(ds.shape)
        self.dtype = ds.dtype

    def permuted(self, idx: np.ndarray) -> "_H5Rows":
        base = self.order if self.order is not None else np.arange(self.shape[0])
        return _H5Rows(self.ds, base[idx])

    def __getitem__(self, s: slice) -> np.ndarray:
        if self.order is None:
            return np.asarray(self.ds[s])
        rows = self.order[s]
        if rows.size == 0:
            return np.empty((0,) + self.shape[1:], self.dtype)
        uniq, inverse = np.unique(rows, return_inverse=True)
        return np.asarray(self.ds[uniq.tolist()])[inverse]


def _as_array(v: Any) -> Any:
    if hasattr(v, "asscipy"):  # the shim's CSRNDArray
        v = v.asscipy()
    elif hasattr(v, "asnumpy"):
        v = v.asnumpy()
    if isinstance(v, np.ndarray):
        return v
    h5 = _h5py_dataset_class()
    if h5 is not None and isinstance(v, h5):
        return _H5Rows(v)
    if _is_sparse(v):
        return v.tocsr()
    try:
        return np.asarray(v, dtype=np.float32)  # mx.nd.array makes float32 from lists
    except (TypeError, ValueError):
        raise TypeError("Invalid type '%s' for data, should be a numpy array, an h5py dataset, "
                        "a scipy.sparse matrix, a list of them or a dict with them as values"
                        % type(v)) from None


def _is_single(data: Any) -> bool:
    if isinstance(data, np.ndarray) or hasattr(data, "asnumpy"):
        return True
    h5 = _h5py_dataset_class()
    return (h5 is not None and isinstance(data, h5)) or _is_sparse(data)


def _init_data(data: ArrayInput, allow_empty: bool, default_name: str
               ) -> List[Tuple[str, np.ndarray]]:
    """Normalise array / list / dict input to ``[(name, array)]`` sorted by name, as MXNet."""
    assert data is not None or allow_empty
    if data is None:
        data = []
    if _is_single(data):
        data = [data]
    if isinstance(data, (list, tuple)):
        if not allow_empty:
            assert len(data) > 0
        if len(data) == 1:
            data = OrderedDict([(default_name, data[0])])
        else:
            data = OrderedDict([("_%d_%s" % (i, default_name), d) for i, d in enumerate(data)])
    if not isinstance(data, dict):
        raise TypeError("Input must be a numpy array, a list of them or a dict with them as values")
    return sorted((k, _as_array(v)) for k, v in data.items())


class NDArrayIter(DataIter):
    """Iterate over arrays in batches (MXNet's NDArrayIter).

    ``last_batch_handle``: 'pad' fills the last batch from the start (tiling
    when the batch is bigger than the data) and reports ``pad``; 'discard'
    drops it; 'roll_over' keeps it for the next epoch, whose first batch is
    the leftover + the head and reports ``pad`` = the leftover count.
    """

    def __init__(self, data: ArrayInput, label: ArrayInput = None, batch_size: int = 1,
                 shuffle: bool = False, last_batch_handle: str = "pad", data_name: str = "data",
                 label_name: str = "softmax_label", layout: str = "NCHW", *,
                 seed: Optional[int] = None) -> None:
        super().__init__(batch_size)
        assert last_batch_handle in ("pad", "discard", "roll_over"), last_batch_handle
        self.data = _init_data(data, allow_empty=False, default_name=data_name)
        self.label = _init_data(label, allow_empty=True, default_name=label_name)
        if last_batch_handle != "discard" and any(
                _is_sparse(a) for _, a in self.data + self.label):
            raise NotImplementedError("`NDArrayIter` only supports ``CSRNDArray`` with "
                                      "`last_batch_handle` set to `discard`.")
        n = self.data[0][1].shape[0]
        for name, arr in self.data + self.label:
            if arr.shape[0] != n:
                raise ValueError(f"{name} has {arr.shape[0]} rows, {self.data[0][0]} has {n}")
        self.idx = np.arange(n)
        self.shuffle = shuffle
        self.last_batch_handle = last_batch_handle
        self.batch_size = batch_size
        self.layout = layout
        self.cursor = -batch_size
        self.num_data = n
        self._rng = np.random.default_rng(seed)
        self._cache_data: Optional[List[np.ndarray]] = None
        self._cache_label: Optional[List[np.ndarray]] = None
        self.reset()
        self.data_list = [x[1] for x in self.data] + [x[1] for x in self.label]
        self.num_source = len(self.data_list)

    @property
    def provide_data(self) -> List[DataDesc]:
        return [DataDesc(k, tuple([self.batch_size] + list(v.shape[1:])), v.dtype, self.layout)
                for k, v in self.data]

    @property
    def provide_label(self) -> List[DataDesc]:
        return [DataDesc(k, tuple([self.batch_size] + list(v.shape[1:])), v.dtype, self.layout)
                for k, v in self.label]

    def hard_reset(self) -> None:
        """Back to the start, forgetting roll-over data."""
        if self.shuffle:
            self._shuffle_data()
        self.cursor = -self.batch_size
        self._cache_data = None
        self._cache_label = None

    def reset(self) -> None:
        """Next epoch: reshuffle; with roll_over, continue after the cached leftover."""
        if self.shuffle:
            self._shuffle_data()
        if self.last_batch_handle == "roll_over" and \
                self.num_data - self.batch_size < self.cursor < self.num_data:
            self.cursor = self.cursor - self.num_data - self.batch_size
        else:
            self.cursor = -self.batch_size

    def iter_next(self) -> bool:
        self.cursor += self.batch_size
        return self.cursor < self.num_data

    def next(self) -> DataBatch:
        if not self.iter_next():
            raise StopIteration
        data = self.getdata()
        label = self.getlabel()
        if data[0].shape[0] != self.batch_size:  # short last batch: keep it for roll_over
            self._cache_data = data
            self._cache_label = label
            raise StopIteration
        return DataBatch(data=data, label=label, pad=self.getpad(), index=None)

    def _getdata(self, source, start: Optional[int] = None, end: Optional[int] = None):
        assert start is not None or end is not None, "should at least specify start or end"
        start = start if start is not None else 0
        if end is None:
            end = source[0][1].shape[0] if source else 0
        return [x[1][start:end] for x in source]

    @staticmethod
    def _concat(first, second):
        if not first or not second:
            return first if first else second
        assert len(first) == len(second), "data source should contain the same size"
        return [np.concatenate([a, b], axis=0) for a, b in zip(first, second)]

    @staticmethod
    def _tile(data, repeats: int):
        return [np.tile(d, [repeats] + [1] * (d.ndim - 1)) for d in data]

    def _batchify(self, source):
        assert self.cursor < self.num_data, "DataIter needs reset."
        bs, n = self.batch_size, self.num_data
        if self.last_batch_handle == "roll_over" and -bs < self.cursor < 0:
            assert self._cache_data is not None or self._cache_label is not None, \
                "next epoch should have cached data"
            cache = self._cache_data if self._cache_data is not None else self._cache_label
            second = self._getdata(source, end=self.cursor + bs)
            if self._cache_data is not None:
                self._cache_data = None
            else:
                self._cache_label = None
            return self._concat(cache, second)
        if self.last_batch_handle == "pad" and self.cursor + bs > n:
            pad = bs - n + self.cursor
            first = self._getdata(source, start=self.cursor)
            if pad > n:
                second = self._tile(self._getdata(source, end=n), pad // n)
                if pad % n:
                    second = self._concat(second, self._getdata(source, end=pad % n))
            else:
                second = self._getdata(source, end=pad)
            return self._concat(first, second)
        end = self.cursor + bs if self.cursor + bs < n else n
        return self._getdata(source, self.cursor, end)

    def getdata(self) -> List[np.ndarray]:
        return self._batchify(self.data)

    def getlabel(self) -> List[np.ndarray]:
        return self._batchify(self.label)

    def getpad(self) -> int:
        if self.last_batch_handle == "pad" and self.cursor + self.batch_size > self.num_data:
            return self.cursor + self.batch_size - self.num_data
        if self.last_batch_handle == "roll_over" and -self.batch_size < self.cursor < 0:
            return -self.cursor
        return 0

    def _shuffle_data(self) -> None:
        self._rng.shuffle(self.idx)
        self.data = [(k, _take_rows(v, self.idx)) for k, v in self.data]
        self.label = [(k, _take_rows(v, self.idx)) for k, v in self.label]


def _take_rows(v: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a source: numpy/scipy by fancy indexing, h5py lazily."""
    if isinstance(v, _H5Rows):
        return v.permuted(idx)
    return v[idx]
