"""Gluon's datasets: ``Dataset`` and its transforms, ``SimpleDataset``, ``ArrayDataset``,
``RecordFileDataset`` (a `.rec` + `.idx` pair at any fsspec URL)."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional, Sequence

from cloudrec import recordio as _recordio
from cloudrec.gluon.data.sampler import FilterSampler, SequentialSampler
from cloudrec.mxnet_base import NDArray, mxnet_errors, shim_storage_options

__all__ = ["Dataset", "SimpleDataset", "ArrayDataset", "RecordFileDataset"]


class Dataset:
    """Abstract dataset: ``__getitem__(idx)`` and ``__len__``."""

    def __getitem__(self, idx: int) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def filter(self, fn: Callable[[Any], bool]) -> "Dataset":
        """The samples for which ``fn(sample)`` is true."""
        return _SampledDataset(self, FilterSampler(fn, self))

    def shard(self, num_shards: int, index: int) -> "Dataset":
        """Contiguous shard ``index`` of ``num_shards`` (the first ``len % num_shards`` shards
        hold one sample more)."""
        if not 0 <= index < num_shards:
            raise ValueError(f"Shard index {index} out of bound [0, {num_shards})")
        length = len(self)
        per, extra = divmod(length, num_shards)
        start = per * index + min(index, extra)
        end = start + per + (1 if index < extra else 0)
        return _SampledDataset(self, SequentialSampler(end - start, start))

    def take(self, count: Optional[int]) -> "Dataset":
        """The first ``count`` samples (all when ``count`` is None or too big)."""
        if count is None or count > len(self):
            count = len(self)
        return _SampledDataset(self, SequentialSampler(count))

    def sample(self, sampler: Sequence[int]) -> "Dataset":
        """The samples ``sampler`` yields, in its order."""
        return _SampledDataset(self, sampler)

    def transform(self, fn: Callable[..., Any], lazy: bool = True) -> "Dataset":
        """``fn(*sample)`` (tuples unpacked) for every sample; ``lazy=False`` computes all now."""
        trans = _LazyTransformDataset(self, fn)
        if lazy:
            return trans
        return SimpleDataset([trans[i] for i in range(len(trans))])

    def transform_first(self, fn: Callable[[Any], Any], lazy: bool = True) -> "Dataset":
        """``fn`` on the first element of each sample only (the image, not the label)."""
        return self.transform(_TransformFirstClosure(fn), lazy)


class SimpleDataset(Dataset):
    """A list (or anything with ``len`` and indexing) as a dataset."""

    def __init__(self, data: Sequence[Any]) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, idx: int) -> Any:
        return self._data[idx]


class ArrayDataset(Dataset):
    """Several equally long arrays zipped: sample ``i`` is ``(a[i], b[i], ...)``.

    A 1-D array yields numpy scalars, a single argument its bare elements, as MXNet."""

    def __init__(self, *args: Any) -> None:
        if not args:
            raise ValueError("Needs at least 1 arrays")
        self._length = len(args[0])
        self._data = []
        for i, data in enumerate(args):
            if len(data) != self._length:
                raise ValueError(f"All arrays must have the same length; array[0] has length "
                                 f"{self._length} while array[{i}] has {len(data)}.")
            if isinstance(data, NDArray) and data.ndim == 1:
                data = data.asnumpy()
            self._data.append(data)

    def __getitem__(self, idx: int) -> Any:
        if len(self._data) == 1:
            return self._data[0][idx]
        return tuple(data[idx] for data in self._data)

    def __len__(self) -> int:
        return self._length


class RecordFileDataset(Dataset):
    """The raw records of a `.rec` file; its `.idx` is the name with `.idx` for `.rec`.

    ``filename`` may be any fsspec URL; ``mx.storage_options`` apply (or pass
    ``storage_options=``).  Pickles and survives ``fork`` (DataLoader workers)."""

    @mxnet_errors
    def __init__(self, filename: str, storage_options: Optional[dict] = None) -> None:
        self.filename = filename
        self.idx_file = os.path.splitext(filename)[0] + ".idx"
        self._record = _recordio.MXIndexedRecordIO(
            self.idx_file, filename, "r", storage_options=shim_storage_options(storage_options))
        self._lock, self._lock_pid = threading.Lock(), os.getpid()

    def _read(self, key: Any) -> bytes:
        """``read_idx`` under a lock: one file handle (seek + read) serves every thread
        (DataLoader(thread_pool=True)); a forked child gets a fresh lock."""
        if self._lock_pid != os.getpid():
            self._lock, self._lock_pid = threading.Lock(), os.getpid()
        with self._lock:
            return self._record.read_idx(key)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock, self._lock_pid = threading.Lock(), os.getpid()

    @mxnet_errors
    def __getitem__(self, idx: int) -> bytes:
        return self._read(self._record.keys[idx])

    def __len__(self) -> int:
        return len(self._record.keys)


class _SampledDataset(Dataset):
    def __init__(self, dataset: Dataset, sampler: Sequence[int]) -> None:
        self._dataset = dataset
        self._indices = list(iter(sampler))

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, idx: int) -> Any:
        return self._dataset[self._indices[idx]]


class _LazyTransformDataset(Dataset):
    def __init__(self, data: Dataset, fn: Callable[..., Any]) -> None:
        self._data, self._fn = data, fn

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, idx: int) -> Any:
        item = self._data[idx]
        if isinstance(item, tuple):
            return self._fn(*item)
        return self._fn(item)


class _TransformFirstClosure:
    """Picklable ``lambda x, *rest: (fn(x),) + rest``."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self._fn = fn

    def __call__(self, x: Any, *args: Any) -> Any:
        if args:
            return (self._fn(x),) + args
        return self._fn(x)
