"""Gluon's ``DataLoader``: batches of a dataset, in the main process or in worker processes.

As MXNet 1.9: ``batch_size`` + ``shuffle``/``sampler``/``last_batch``
('keep', 'discard', 'rollover') build a ``BatchSampler`` unless one is given;
``batchify_fn`` collates samples (default: stack arrays into an NDArray,
numbers into an NDArray of their numpy dtype, tuples element-wise into a
list); ``num_workers > 0`` runs batches in a pool of processes (``fork``
where available, so the dataset is inherited, not pickled) or, with
``thread_pool=True``, of threads; ``prefetch`` batches (default
``2 * num_workers``) are in flight; ``timeout`` seconds per batch.

Unlike MXNet, each batch draws its randomness from its own seed (see
:mod:`cloudrec.gluon.rng`), so the batches are the same for any
``num_workers``, and workers never repeat each other's augmentations.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import weakref
from collections import deque
from typing import Any, Callable, Deque, Iterator, List, NoReturn, Optional, Sequence

import numpy as np

from cloudrec.gluon import rng
from cloudrec.gluon.data.sampler import BatchSampler, RandomSampler, SequentialSampler
from cloudrec.mxnet_base import NDArray, as_mxnet_error

__all__ = ["DataLoader", "default_batchify_fn", "default_mp_batchify_fn"]


def default_batchify_fn(data: Sequence[Any]) -> Any:
    """Collate samples: arrays stacked, tuples element-wise (a list), numbers as an array."""
    first = data[0]
    if isinstance(first, np.ndarray):
        return np.stack([np.asarray(d) for d in data]).view(NDArray)
    if isinstance(first, tuple):
        return [default_batchify_fn(list(col)) for col in zip(*data)]
    arr = np.asarray(data)
    return np.array(arr, dtype=arr.dtype).view(NDArray)


#: Workers return batches by pickling, so the same collation serves processes.
default_mp_batchify_fn = default_batchify_fn

_worker_dataset: Any = None
_worker_batchify: Optional[Callable[[List[Any]], Any]] = None


def _worker_init(dataset: Any, batchify_fn: Callable[[List[Any]], Any]) -> None:
    global _worker_dataset, _worker_batchify
    _worker_dataset, _worker_batchify = dataset, batchify_fn


def _make_batch(dataset: Any, batchify_fn: Callable[[List[Any]], Any], indices: List[int],
                batch_seed: int) -> Any:
    with rng.using(batch_seed):
        return batchify_fn([dataset[i] for i in indices])


def _worker_batch(indices: List[int], batch_seed: int) -> Any:
    return _make_batch(_worker_dataset, _worker_batchify, indices, batch_seed)


class DataLoader:
    """Loads batches from ``dataset`` (MXNet's ``gluon.data.DataLoader``)."""

    def __init__(self, dataset: Any, batch_size: Optional[int] = None, shuffle: bool = False,
                 sampler: Optional[Sequence[int]] = None, last_batch: Optional[str] = None,
                 batch_sampler: Optional[Sequence[List[int]]] = None,
                 batchify_fn: Optional[Callable[[List[Any]], Any]] = None,
                 num_workers: int = 0, pin_memory: bool = False, pin_device_id: int = 0,
                 prefetch: Optional[int] = None, thread_pool: bool = False,
                 timeout: float = 120, try_nopython: Optional[bool] = None) -> None:
        self._dataset = dataset
        self._timeout = timeout
        if batch_sampler is None:
            if batch_size is None:
                raise ValueError("batch_size must be specified unless batch_sampler is specified")
            if sampler is None:
                sampler = RandomSampler(len(dataset)) if shuffle else SequentialSampler(len(dataset))
            elif shuffle:
                raise ValueError("shuffle must not be specified if sampler is specified")
            batch_sampler = BatchSampler(sampler, batch_size, last_batch if last_batch else "keep")
        elif batch_size is not None or shuffle or sampler is not None or last_batch is not None:
            raise ValueError("batch_size, shuffle, sampler and last_batch must not be specified "
                             "if batch_sampler is specified.")
        self._batch_sampler = batch_sampler
        self._num_workers = max(0, int(num_workers))
        self._thread_pool = bool(thread_pool)
        self._batchify_fn = batchify_fn or (default_mp_batchify_fn if self._num_workers
                                            else default_batchify_fn)
        self._prefetch = max(0, int(prefetch) if prefetch is not None else 2 * self._num_workers)
        self._pool: Optional[multiprocessing.pool.Pool] = None
        self._finalizer: Optional[weakref.finalize] = None

    def __len__(self) -> int:
        return len(self._batch_sampler)

    def _get_pool(self) -> multiprocessing.pool.Pool:
        if self._pool is None:
            if self._thread_pool:
                self._pool = multiprocessing.pool.ThreadPool(self._num_workers)
            else:
                methods = multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
                self._pool = ctx.Pool(self._num_workers, initializer=_worker_init,
                                      initargs=(self._dataset, self._batchify_fn))
            self._finalizer = weakref.finalize(self, _shutdown, self._pool)
        return self._pool

    def __iter__(self) -> Iterator[Any]:
        if self._num_workers == 0:
            for indices in self._batch_sampler:
                try:
                    batch = _make_batch(self._dataset, self._batchify_fn, indices,
                                        rng.next_seed())
                except Exception as exc:
                    _reraise(exc)
                yield batch
            return
        yield from self._iter_pool()

    def _iter_pool(self) -> Iterator[Any]:
        pool = self._get_pool()
        if self._thread_pool:
            def submit(indices: List[int]) -> Any:
                return pool.apply_async(_make_batch, (self._dataset, self._batchify_fn, indices,
                                                      rng.next_seed()))
        else:
            def submit(indices: List[int]) -> Any:
                return pool.apply_async(_worker_batch, (indices, rng.next_seed()))
        pending: Deque[Any] = deque()
        batches = iter(self._batch_sampler)
        window = max(1, self._prefetch)
        try:
            for indices in batches:
                pending.append(submit(indices))
                if len(pending) >= window:
                    yield self._result(pending.popleft())
            while pending:
                yield self._result(pending.popleft())
        finally:
            for res in pending:  # a consumer that stopped early: let the rest finish quietly
                try:
                    res.wait(0)
                except Exception:
                    pass

    def _result(self, res: Any) -> Any:
        try:
            return res.get(self._timeout)
        except multiprocessing.TimeoutError:
            raise multiprocessing.TimeoutError(
                f"DataLoader: a worker did not return its batch within {self._timeout} s "
                "(raise timeout=, or check the dataset for a hang)") from None
        except Exception as exc:
            _reraise(exc)

    def close(self) -> None:
        """Stop the worker pool (also done when the loader is garbage collected)."""
        if self._finalizer is not None:
            self._finalizer()
        self._pool = None

    def __enter__(self) -> "DataLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as MXNet would (also an MXNetError where it applies)."""
    new = as_mxnet_error(exc)
    if new is exc:
        raise exc
    raise new from None


def _shutdown(pool: multiprocessing.pool.Pool) -> None:
    pool.terminate()
    pool.join()
