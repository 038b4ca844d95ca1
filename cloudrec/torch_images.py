"""The torch datasets that decode images: ImageRecordIter's pipeline as an IterableDataset,
and a resumable batch sampler for the map-style IndexedRecordDataset.

Both keep their progress in an :class:`EpochSampler` in the main process, exactly as
``RecordIterableDataset`` does (``ImageRecordDataset`` is one), so ``state_dict()``
means the same on every torch dataset: global (seed, epoch, samples consumed) and
resumable on another world size or number of DataLoader workers.
"""
from __future__ import annotations

import json
import os
import weakref
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from cloudrec.errors import ConfigError
from cloudrec.reader.distenv import dist_info, worker_info
from cloudrec.reader.sampler import EpochSampler
from cloudrec.torch import RecordIterableDataset
from cloudrec.torch_loader_exit import batches
from cloudrec.torch_transfer import small_tensor

__all__ = ["ImageRecordDataset", "ResumableBatchSampler", "ResumableMapLoader"]

_RESERVED = ("num_parts", "part_index", "part_mode", "worker", "num_workers")


class ImageRecordDataset(RecordIterableDataset):
    """ImageRecordIter's whole pipeline (decode, MXNet augmentations, normalisation) as a
    torch IterableDataset of ready batches.

    Each DataLoader worker of each rank runs its own ImageRecordIter over this rank's
    share of a global epoch order (``part_mode='even'``) and takes that worker's
    batches, so the union over ranks and workers is the dataset, every rank yields the
    same number of batches, and padding is reported.  Use it with
    :class:`cloudrec.torch.ResumableLoader` (or ``DataLoader(ds, batch_size=None)``
    plus ``mark_consumed``).  Items are dicts: ``data`` (tensor, NCHW float32 unless
    ``layout``/``dtype`` say otherwise), ``label``, ``index`` (record ids), ``pad``,
    ``is_pad``, ``ids``, ``epoch``, ``consumed``.  Keyword arguments are
    ImageRecordIter's, with one other default: ``decode_reduce=True`` (scaled JPEG
    decoding and crop-window resizing, pixels within a few levels of MXNet's; this
    dataset is cloudrec's own, not an MXNet port); pass ``decode_reduce=False`` for
    MXNet-exact pixels.
    """

    def __init__(self, *, rank: Optional[int] = None, world_size: Optional[int] = None,
                 **iter_kwargs: Any) -> None:
        for reserved in _RESERVED:
            if reserved in iter_kwargs:
                raise ConfigError(f"ImageRecordDataset sets {reserved} itself from the rank, "
                                  "world size and DataLoader workers; pass rank/world_size")
        from cloudrec.iterators._records import RecordSource
        from cloudrec.iterators.record_params import parse_kwargs

        iter_kwargs.setdefault("decode_reduce", True)  # the fast path (see the docstring)
        p = parse_kwargs(dict(iter_kwargs))
        info = dist_info(rank, world_size)
        self.rank, self.world_size = info.rank, info.world_size
        self.iter_kwargs = dict(iter_kwargs)
        # the main process holds the progress; it opens the records' index once for the table
        src = RecordSource(p.parser.path_imgrec, p.parser.path_imgidx, p.extra.storage_options,
                           p.extra.cache, p.extra.fetch_options)
        try:
            table = src.ds.table
        finally:
            src.close()
        mode = p.extra.shuffle_mode if p.record.shuffle else "none"
        super().__init__(_TableOnly(table), seed=p.record.seed, mode=mode, rank=self.rank,
                         world_size=self.world_size, batch_size=p.batch.batch_size, last="pad")

    def __iter__(self) -> Iterator[dict]:
        worker, workers = worker_info()
        state = json.loads(self._shared.value)
        it = self._worker_iter(state, worker, workers)
        ok = False
        try:
            for batch in it:
                n = len(batch.record_ids)
                is_pad = np.zeros(n, bool)
                if batch.pad:
                    is_pad[n - int(batch.pad):] = True
                # no copies: the pipeline never reuses a data array that is still referenced,
                # and the label and index arrays are the batch's own (new for every batch)
                ids = batch.index
                # the small arrays travel from a DataLoader worker by value (torch_transfer)
                yield {"data": torch.from_numpy(batch.data[0]),
                       "label": small_tensor(batch.label[0]),
                       "index": small_tensor(ids), "ids": small_tensor(ids.copy()),
                       "pad": int(batch.pad), "is_pad": small_tensor(is_pad),
                       "epoch": int(batch.epoch), "consumed": int(batch.consumed),
                       "workers": workers}
            ok = True
        except GeneratorExit:  # the loader stopped early: the iterator stays usable
            ok = True
            raise
        finally:
            if ok:
                _WORKER_ITERS[self] = ((os.getpid(), worker, workers), it)
            else:  # a failed epoch: nothing kept
                it.close()

    def _worker_iter(self, state: Dict[str, Any], worker: int, workers: int) -> Any:
        """This process's ImageRecordIter for (worker, workers), kept from the last epoch
        (its threads, buffers and the next epoch built ahead) or made at ``state``."""
        where = (os.getpid(), worker, workers)
        cached = _WORKER_ITERS.pop(self, None)
        if cached is not None:
            if cached[0][0] != where[0]:  # inherited over fork(): its threads are not ours
                _FOREIGN.append(cached[1])
            elif cached[0] == where and not cached[1]._closed:
                cached[1].load_state_dict(state)  # takes over the next epoch when it matches
                return cached[1]
            else:
                cached[1].close()
        kw = dict(self.iter_kwargs, num_parts=self.world_size, part_index=self.rank,
                  part_mode="even", worker=worker, num_workers=workers)
        return _StateIter(state, **kw)

    def close(self) -> None:
        """Release the decode threads and buffers this process keeps between epochs."""
        cached = _WORKER_ITERS.pop(self, None)
        if cached is not None and cached[0][0] == os.getpid():
            cached[1].close()


#: per dataset, this process's worker iterator kept between epochs (dropped with the dataset)
_WORKER_ITERS: "weakref.WeakKeyDictionary[Any, Tuple[Tuple[int, int, int], Any]]" = \
    weakref.WeakKeyDictionary()
_FOREIGN: List[Any] = []  # iterators inherited from a parent process: never closed here


def _state_iter_class():
    from cloudrec.iterators import ImageRecordIter

    class StateIter(ImageRecordIter):
        """ImageRecordIter that starts at ``state`` (no batch decoded for the position the
        constructor would start at)."""

        def __init__(self, state: Dict[str, Any], **kw: Any) -> None:
            self._state0: Optional[Dict[str, Any]] = state
            super().__init__(**kw)

        def _restart(self) -> None:
            state, self._state0 = getattr(self, "_state0", None), None
            if state is not None:
                self.sampler.load_state_dict(state)
            super()._restart()
    return StateIter


def _StateIter(state: Dict[str, Any], **kw: Any) -> Any:
    global _STATE_ITER
    if _STATE_ITER is None:
        _STATE_ITER = _state_iter_class()
    return _STATE_ITER(state, **kw)


_STATE_ITER: Any = None


class _TableOnly:
    """A dataset stand-in that only carries the record table (the workers open the files)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.shards: List[Any] = []


class ResumableBatchSampler(Sampler):
    """Batches of indices of a map-style dataset (e.g. ``IndexedRecordDataset``) from an
    :class:`EpochSampler`: the same orders, rank partition and state as every iterator.

    A DataLoader draws indices ahead of the batches it hands out, so progress is
    counted where batches are used: iterate :class:`ResumableMapLoader` (which
    builds the DataLoader with this sampler), not the DataLoader itself.
    """

    def __init__(self, n: int, **sampler_kw: Any) -> None:
        self.sampler = EpochSampler(int(n), **sampler_kw)
        if hasattr(self.sampler, "use_workers"):
            self.sampler.use_workers(1)  # one stream of batches, whatever decodes them

    def __iter__(self) -> Iterator[List[int]]:
        for ids, _is_pad in self.sampler.epoch_slice().batches():
            yield [int(i) for i in ids]

    def __len__(self) -> int:
        return len(self.sampler)


class ResumableMapLoader:
    """A DataLoader over a map-style dataset whose batches come from an EpochSampler and
    whose progress is counted per batch handed out (``state_dict()``/``load_state_dict()``,
    resumable on another world size).  ``sampler_kw`` go to EpochSampler (batch_size, seed,
    mode, rank, world_size, last); ``loader_kw`` to the DataLoader (num_workers, ...).
    Each batch is ``{"data": collated items, "ids": indices, "is_pad", "epoch", "consumed"}``.
    """

    def __init__(self, dataset: Any, *, loader_kw: Optional[Dict[str, Any]] = None,
                 **sampler_kw: Any) -> None:
        from torch.utils.data import DataLoader
        self.dataset = dataset
        self.batch_sampler = ResumableBatchSampler(len(dataset), **sampler_kw)
        self.sampler = self.batch_sampler.sampler
        self._loader_kw = dict(loader_kw or {})
        self._make = lambda: DataLoader(dataset, batch_sampler=self.batch_sampler,
                                        **self._loader_kw)
        # persistent workers live in one DataLoader: made once and kept, or every pass
        # would fork new ones (its next pass asks the sampler, so a restored state holds)
        self._kept = None
        if self._loader_kw.get("persistent_workers") and self._loader_kw.get("num_workers", 0):
            self._kept = self._make()

    def _loader(self) -> Any:
        return self._kept if self._kept is not None else self._make()

    def __iter__(self) -> Iterator[dict]:
        s = self.sampler
        epoch, start = s.epoch, s.consumed
        sl = s.epoch_slice()
        for i, data in enumerate(batches(self._loader())):   # an error stops the workers at once
            ids, pad = sl.batch(i)
            s.consumed = s.consumed_after(start, int(sl.steps[i]) + 1)
            yield {"data": data, "ids": torch.from_numpy(ids.copy()),
                   "is_pad": torch.from_numpy(pad.copy()), "epoch": epoch,
                   "consumed": int(s.consumed)}
        if s.epoch == epoch:
            s.set_epoch(epoch + 1)

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> Dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state)
