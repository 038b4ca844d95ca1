"""PyTorch adapter: record datasets as torch Datasets, exactly once per epoch, resumable.

``RecordIterableDataset`` yields whole batches (use ``DataLoader(ds,
batch_size=None, num_workers=K)``): every DataLoader worker takes its share of
this rank's batches (``partition_epoch``), fetches them with a
``RecordFetcher`` and decodes them; each batch says where it leaves the epoch
(``epoch``, ``consumed``), so progress is known in the main process whatever
K is. ``ResumableLoader`` wraps the DataLoader and keeps that state.
With a plain DataLoader, call ``ds.set_epoch(e)`` before each iteration and
``ds.mark_consumed(batch)`` after each batch to get the same state.
``IndexedRecordDataset`` is a map-style Dataset over MXIndexedRecordIO for
legacy code. Arrays become tensors with ``torch.from_numpy`` (no copy).
torch is an optional dependency: install ``cloudrec[torch]``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np

try:
    import torch
    from torch.utils.data import DataLoader, Dataset, IterableDataset
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("cloudrec.torch needs PyTorch: pip install 'cloudrec[torch]'") from exc

from cloudrec.errors import ConfigError
from cloudrec.format.irheader import unpack
from cloudrec.reader.distenv import worker_info
from cloudrec.reader.partition import partition_epoch
from cloudrec.reader.sampler import EpochSampler

__all__ = ["RecordIterableDataset", "ResumableLoader", "IndexedRecordDataset",
           "ImageRecordDataset", "decode_image", "collate_numpy"]


def decode_image(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Default decode: IRHeader + encoded image -> (HWC uint8 image in RGB order, float32 label).

    The one decode of ``cloudrec.image`` (pixel guard included)."""
    from cloudrec.image.decode import decode_image as _decode

    header, img_bytes = unpack(payload)
    img = _decode(img_bytes, 3, key=header.id)
    label = np.atleast_1d(np.array(header.label, dtype=np.float32))  # own, writable copy
    return img[:, :, ::-1], label


def _to_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        if not x.flags.writeable or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x) if x.flags.writeable else x.copy()
        return torch.from_numpy(x)
    return x


def collate_numpy(items: Sequence[Any]) -> Any:
    """Stack a batch of decoded items field by field with numpy, then wrap as tensors (no copy)."""
    first = items[0]
    if isinstance(first, tuple):
        return tuple(collate_numpy([it[i] for it in items]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: collate_numpy([it[k] for it in items]) for k in first}
    if isinstance(first, (np.ndarray, np.generic, int, float)):
        return torch.from_numpy(np.stack([np.asarray(it) for it in items]))
    return list(items)


class RecordIterableDataset(IterableDataset):
    """Batches of one rank of a record dataset, split over DataLoader workers.

    ``source``: a ShardedDataset or URL(s) for ``open_dataset``. ``decode``
    maps a record payload to an item (default :func:`decode_image`);
    ``collate`` makes the batch (default :func:`collate_numpy`). Each batch is a
    dict: ``data`` (the collated items), ``ids``, ``is_pad``, ``epoch``,
    ``consumed`` (global samples consumed after it). Sampler keywords (seed,
    mode, batch_size, last, rank, world_size, order_options) go to EpochSampler.
    """

    def __init__(self, source: Any, decode: Optional[Callable[[bytes], Any]] = None, *,
                 collate: Optional[Callable[[Sequence[Any]], Any]] = None,
                 storage_options: Optional[Dict[str, Any]] = None,
                 fetch_options: Optional[Mapping[str, Any]] = None, **sampler_kw: Any) -> None:
        super().__init__()
        if isinstance(source, (str, os.PathLike, list, tuple)):
            from cloudrec.dataset import open_dataset
            source = open_dataset(source, storage_options=storage_options)
        self.source = source
        self.decode = decode or decode_image
        self.collate = collate or collate_numpy
        self.fetch_options = dict(fetch_options or {})
        self.sampler = EpochSampler(source.table, **sampler_kw)
        # (epoch, consumed) shared with DataLoader workers, persistent ones included
        self._shared = mp.get_context("spawn").RawArray("q", 2)
        self._publish()
        self._fetcher: Any = None
        self._fetcher_pid: Optional[int] = None

    # ----- state, kept by the main process
    def _publish(self) -> None:
        self._shared[0], self._shared[1] = self.sampler.epoch, self.sampler.consumed

    def set_epoch(self, epoch: int) -> None:
        """Go to ``epoch`` (keeps the progress if it is the current one); call before iterating."""
        self.sampler.set_epoch(epoch)
        self._publish()

    def state_dict(self) -> dict:
        """Global progress (seed, epoch, samples consumed) as of the last batch marked consumed."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``; also with another world size or number of workers."""
        self.sampler.load_state_dict(state)
        self._publish()

    def mark_consumed(self, batch: Mapping[str, Any]) -> None:
        """Record that ``batch`` was used: the next iteration (after ``set_epoch``) resumes after it.

        Workers read the position once, when an iteration starts; it is not
        published here, since workers may still be starting their iteration.
        """
        self.sampler.load_state_dict({**self.sampler.state_dict(), "epoch": int(batch["epoch"]),
                                      "consumed": int(batch["consumed"])})

    def end_epoch(self) -> None:
        """Mark the current epoch finished: the next iteration starts the next epoch."""
        self.sampler.set_epoch(self.sampler.epoch + 1)
        self._publish()

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch from the current position."""
        return len(self.sampler)

    # ----- iteration, in whatever process the DataLoader runs it
    def _fetch(self, ids: np.ndarray) -> Iterator[tuple[int, bytes]]:
        if self._fetcher is None or self._fetcher_pid != os.getpid():
            from cloudrec.reader.fetch import RecordFetcher
            self._fetcher = RecordFetcher(self.source, **self.fetch_options)
            self._fetcher_pid = os.getpid()
        return self._fetcher.fetch(ids)

    def __iter__(self) -> Iterator[dict]:
        s = self.sampler
        epoch, consumed = int(self._shared[0]), int(self._shared[1])
        if epoch != s.epoch:        # a worker's copy follows the main process
            s.set_epoch(epoch)
        wid, nworkers = worker_info()
        sl = partition_epoch(s.order(epoch), rank=s.rank, world_size=s.world_size, worker=wid,
                             num_workers=nworkers, batch_size=s.batch_size, last=s.last,
                             start=consumed)
        records = self._fetch(sl.ids)
        for i, step in enumerate(sl.steps.tolist()):
            ids, pad = sl.batch(i)
            items = []
            for want in ids.tolist():
                rid, payload = next(records)
                if rid != want:
                    raise RuntimeError(f"fetcher returned record {rid}, expected {want}")
                items.append(self.decode(payload))
            yield {"data": self.collate(items), "ids": torch.from_numpy(ids.copy()),
                   "is_pad": torch.from_numpy(pad.copy()), "epoch": epoch,
                   "consumed": s.consumed_after(consumed, step + 1)}


def _uses_hdfs_native(source: Any) -> bool:
    """True when any shard of ``source`` is read through hdfs-native (hdfs:// URLs)."""
    shards = getattr(source, "shards", None) or []
    return any(str(getattr(sh, "rec_url", "")).startswith(("hdfs://", "viewfs://")) for sh in shards)


class ResumableLoader:
    """A DataLoader over a RecordIterableDataset that keeps the global progress.

    Iterating yields the rest of the current epoch and then moves to the next
    one; ``state_dict()`` taken after any batch restores the exact next batch.
    Keyword arguments go to ``torch.utils.data.DataLoader`` (batch_size=None).
    """

    def __init__(self, dataset: RecordIterableDataset, **loader_kw: Any) -> None:
        if loader_kw.get("batch_size") is not None:
            raise ConfigError("RecordIterableDataset batches itself: set its batch_size, not the loader's")
        loader_kw["batch_size"] = None
        if loader_kw.get("num_workers", 0) > 0 and "multiprocessing_context" not in loader_kw \
                and _uses_hdfs_native(dataset.source):
            # hdfs-native's I/O threads do not survive fork(): spawn the workers instead
            loader_kw["multiprocessing_context"] = "spawn"
        self.dataset = dataset
        self.loader = DataLoader(dataset, **loader_kw)

    def __iter__(self) -> Iterator[dict]:
        ds = self.dataset
        ds._publish()
        epoch = ds.sampler.epoch
        for batch in self.loader:
            ds.mark_consumed(batch)
            yield batch
        if ds.sampler.epoch == epoch:
            ds.end_epoch()

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(state)


class IndexedRecordDataset(Dataset):
    """Map-style Dataset over an indexed `.rec` (MXIndexedRecordIO), item i = the i-th `.idx` key.

    ``transform`` maps the record payload to the item (default: decoded image
    tensor HWC uint8 RGB and float32 label). Each process opens its own reader.
    """

    def __init__(self, idx_path: str, rec_path: str, transform: Optional[Callable[[bytes], Any]] = None,
                 storage_options: Optional[Dict[str, Any]] = None, key_type: Callable = int) -> None:
        from cloudrec.recordio import MXIndexedRecordIO

        self.idx_path, self.rec_path = idx_path, rec_path
        self.storage_options, self.key_type = storage_options, key_type
        self.transform = transform
        self._rec = MXIndexedRecordIO(idx_path, rec_path, "r", key_type=key_type,
                                      storage_options=storage_options)
        self.keys = list(self._rec.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Any:
        if not -len(self.keys) <= i < len(self.keys):
            raise IndexError(f"index {i} out of range for {len(self.keys)} records in {self.rec_path}")
        payload = self._rec.read_idx(self.keys[i])
        if self.transform is not None:
            return self.transform(payload)
        img, label = decode_image(payload)
        return _to_tensor(np.ascontiguousarray(img)), torch.from_numpy(label)


class ImageRecordDataset(IterableDataset):
    """ImageRecordIter's whole pipeline (decode, MXNet augmentations, normalisation) as
    a torch IterableDataset of ready batches.

    Each DataLoader worker of each rank runs its own ImageRecordIter over part
    ``rank * K + worker`` of ``world_size * K`` equal parts (``part_mode='even'``),
    so the union over ranks and workers is the dataset, every worker yields the
    same number of batches, and padding is reported. Use
    ``DataLoader(ds, batch_size=None, num_workers=K)``; call ``set_epoch(e)``
    before each epoch (a new shuffle per epoch). Items are dicts: ``data``
    (tensor, NCHW float32 unless ``layout``/``dtype`` say otherwise), ``label``,
    ``index`` (record ids) and ``pad``.
    """

    def __init__(self, *, rank: Optional[int] = None, world_size: Optional[int] = None,
                 **iter_kwargs: Any) -> None:
        super().__init__()
        from cloudrec.reader.distenv import dist_info

        for reserved in ("num_parts", "part_index", "part_mode"):
            if reserved in iter_kwargs:
                raise ConfigError(f"ImageRecordDataset sets {reserved} itself from the rank, "
                                  "world size and DataLoader workers; pass rank/world_size")
        info = dist_info(rank, world_size)
        self.rank, self.world_size = info.rank, info.world_size
        self.iter_kwargs = dict(iter_kwargs)
        self._epoch = mp.get_context("spawn").RawValue("q", 0)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration reads (shared with persistent workers)."""
        self._epoch.value = int(epoch)

    def __iter__(self) -> Iterator[dict]:
        from cloudrec.iterators import ImageRecordIter

        worker, workers = worker_info()
        kw = dict(self.iter_kwargs, num_parts=self.world_size * workers,
                  part_index=self.rank * workers + worker, part_mode="even")
        it = ImageRecordIter(**kw)
        try:
            epoch = self._epoch.value
            if epoch:
                it.load_state_dict({"epoch": epoch, "batches": 0})
            for batch in it:
                # the pipeline never reuses a buffer that is still referenced: no copy
                yield {"data": torch.from_numpy(batch.data[0]),
                       "label": torch.from_numpy(batch.label[0].copy()),
                       "index": torch.from_numpy(np.asarray(batch.index).copy()),
                       "pad": int(batch.pad)}
        finally:
            it.close()
