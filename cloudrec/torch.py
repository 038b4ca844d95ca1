"""PyTorch adapter: record datasets as torch Datasets, exactly once per epoch, resumable.

``RecordIterableDataset`` yields whole batches (use ``DataLoader(ds,
batch_size=None, num_workers=K)``): every DataLoader worker takes its share of
this rank's batches (``EpochSampler.epoch_slice``), fetches them with a
``RecordFetcher`` and decodes them; each batch says where it leaves the epoch
(``epoch``, ``consumed``), so progress is known in the main process whatever
K is. ``ResumableLoader`` wraps the DataLoader and keeps that state.
With a plain DataLoader, call ``ds.set_epoch(e)`` before each iteration and
``ds.mark_consumed(batch)`` after each batch to get the same state.
``IndexedRecordDataset`` is a map-style Dataset over MXIndexedRecordIO for
legacy code. Arrays become tensors with ``torch.from_numpy`` (no copy); in a
DataLoader worker, arrays of up to 64 KB travel to the main process by value
and become tensors there (:mod:`cloudrec.torch_transfer`).
torch is an optional dependency: install ``cloudrec[torch]``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np

try:
    import torch
    from torch.utils.data import DataLoader, Dataset, IterableDataset
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("cloudrec.torch needs PyTorch: pip install 'cloudrec[torch]'") from exc

from cloudrec.errors import CloudrecError, ConfigError
from cloudrec.format.irheader import unpack
from cloudrec.reader.distenv import worker_info
from cloudrec.reader.sampler import EpochSampler
from cloudrec.torch_loader_exit import batches
from cloudrec.torch_shm import shared_payloads
from cloudrec.torch_transfer import by_value, small_tensor

_STATE_BYTES = 1 << 16   # the sampler state (JSON) shared with DataLoader workers

__all__ = ["RecordIterableDataset", "ResumableLoader", "IndexedRecordDataset",
           "ImageRecordDataset", "ResumableBatchSampler", "ResumableMapLoader", "decode_image",
           "collate_numpy",
           "resized_decoder"]


def decode_image(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Default decode: IRHeader + encoded image -> (HWC uint8 image in RGB order, float32 label).

    The one decode of ``cloudrec.image`` (pixel guard included)."""
    from cloudrec.image.decode import decode_image as _decode

    header, img_bytes = unpack(payload)
    img = _decode(img_bytes, 3, key=header.id)
    label = np.atleast_1d(np.array(header.label, dtype=np.float32))  # own, writable copy
    return img[:, :, ::-1], label


def _named(decode: Callable[[bytes], Any], payload: bytes, url_of: Callable[[Any], str],
           rid: Any) -> Any:
    """``decode(payload)``; a cloudrec error from it also names the file and the record."""
    try:
        return decode(payload)
    except CloudrecError as exc:
        from cloudrec.storage.redact import redact_text
        where = redact_text(f" ({url_of(rid)}, record {rid})")
        if where not in str(exc):
            exc.args = (f"{exc}{where}",) + tuple(exc.args[1:])
        raise


def _to_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        if not x.flags.writeable or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x) if x.flags.writeable else x.copy()
        return torch.from_numpy(x)
    return x


def collate_numpy(items: Sequence[Any]) -> Any:
    """Stack a batch of decoded items field by field with numpy, then wrap as tensors (no copy).

    Arrays of different shapes (images of different sizes, as an ordinary
    ``im2rec --pass-through`` pack holds) cannot be stacked: that field is a
    list of tensors instead.  To get one (B, H, W, C) tensor, bring images to
    one size in ``decode`` (e.g. :func:`resized_decoder`) or use
    ``ImageRecordDataset``, which augments like ImageRecordIter.
    """
    first = items[0]
    if isinstance(first, tuple):
        return tuple(collate_numpy([it[i] for it in items]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: collate_numpy([it[k] for it in items]) for k in first}
    if isinstance(first, (np.ndarray, np.generic, int, float)):
        arrays = [np.asarray(it) for it in items]
        if any(a.shape != arrays[0].shape for a in arrays):
            return [_to_tensor(a) for a in arrays]
        return torch.from_numpy(np.stack(arrays))
    return list(items)


def resized_decoder(size: int) -> Callable[[bytes], tuple[np.ndarray, np.ndarray]]:
    """A ``decode`` giving (size, size, 3) RGB uint8 images (shorter side to ``size``, centre
    crop; MXNet's resize_short + center_crop), so a batch of mixed-size photos stacks."""
    from cloudrec.image.ops import center_crop, resize_short

    def decode(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
        img, label = decode_image(payload)
        img, _ = center_crop(resize_short(img, size), (size, size))
        return np.ascontiguousarray(img), label
    return decode


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
        from cloudrec.options import FetchOptions
        fo = FetchOptions.coerce(fetch_options)
        if isinstance(source, (str, os.PathLike, list, tuple)):
            from cloudrec.dataset import open_dataset
            table = {"table": fo.table, "table_stale": fo.table_stale} if fo.table else {}
            # as the iterators: an .idx that exists is authoritative, a missing one is scanned for
            source = open_dataset(source, storage_options=storage_options, require_index=False,
                                  **table)
        elif fo.table:
            raise ConfigError("fetch_options['table'] opens a dataset from URLs; for a dataset "
                              "opened already, open it with open_dataset(..., table=...)")
        self.source = source
        self.decode = decode or decode_image
        self.collate = collate or collate_numpy
        self.fetch_options = dict(fetch_options or {})
        self.sampler = EpochSampler(source.table, **sampler_kw)
        # several workers of a scattered order without a cache share one download per shard
        from cloudrec.reader.spool import Spool
        urls = [sh.rec_url for sh in getattr(source, "shards", [])]
        self.spool = Spool(self, source, mode=self.sampler.mode,
                           world_size=self.sampler.world_size,
                           fetch_kw=fo.fetcher_kwargs(urls) if urls else {}, enabled=fo.spool)
        # the sampler state shared with DataLoader workers, persistent ones included
        self._shared = mp.get_context("spawn").RawArray("c", _STATE_BYTES)
        self._publish()
        self._fetcher: Any = None
        self._fetcher_pid: Optional[int] = None

    # ----- state, kept by the main process
    def _publish(self) -> None:
        blob = json.dumps(self.sampler.state_dict()).encode()
        if len(blob) >= _STATE_BYTES:
            raise ConfigError(f"sampler state of {len(blob)} bytes is too large to share with workers")
        self._shared.value = blob

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
        if "workers" in batch:      # the layout the batch was cut under (see EpochSampler.use_workers)
            self.sampler.use_workers(int(batch["workers"]))
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
    def _fetch(self, ids: np.ndarray, num_workers: int = 0,
               **hints: Any) -> Iterator[tuple[int, bytes]]:
        if self._fetcher is None or self._fetcher_pid != os.getpid():
            from cloudrec.options import FetchOptions
            from cloudrec.reader.fetch import RecordFetcher
            urls = [sh.rec_url for sh in getattr(self.source, "shards", [])]
            # the backend's fetch defaults, as every front end (cloudrec.options.FETCH_DEFAULTS)
            kw = FetchOptions.coerce(self.fetch_options).fetcher_kwargs(urls)
            kw.update(self.spool.fetch_kw(num_workers))
            self._fetcher = RecordFetcher(self.source, **kw)
            self._fetcher_pid = os.getpid()
        return self._fetcher.fetch(ids, **hints)

    def __iter__(self) -> Iterator[dict]:
        s = self.sampler
        s.load_state_dict(json.loads(self._shared.value))   # a worker's copy follows the main process
        epoch, consumed = s.epoch, s.consumed
        wid, nworkers = worker_info()
        sl = s.epoch_slice(wid, nworkers)   # this worker's contiguous span, order computed lazily
        # block/shard orders: windows cut at shuffle windows, only touching records merged,
        # so no byte is read twice (RecordFetcher.fetch)
        records = self._fetch(sl.ids, nworkers, chunk_starts=sl.chunk_starts,
                              touching_only=sl.exclusive is not None)
        for i, step in enumerate(sl.steps.tolist()):
            ids, pad = sl.batch(i)
            items = []
            for want in ids.tolist():
                rid, payload = next(records)
                if rid != want:
                    raise RuntimeError(f"fetcher returned record {rid}, expected {want}")
                items.append(_named(self.decode, payload, self.source.record_url, rid))
            # small arrays travel from a worker by value (cloudrec.torch_transfer), large
            # payloads through /dev/shm (cloudrec.torch_shm)
            yield {"data": shared_payloads(by_value(self.collate(items))),
                   "ids": small_tensor(ids.copy()),
                   "is_pad": small_tensor(pad.copy()), "epoch": epoch,
                   "consumed": s.consumed_after(consumed, step + 1), "workers": nworkers}
        # run the fetcher to its end: there it waits for shard downloads still publishing,
        # which the node's other processes may be following (a DataLoader worker exits
        # right after this, killing them, and a follower would fetch the shard again)
        for rid, _ in records:
            raise RuntimeError(f"fetcher returned record {rid} after this worker's span")


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
        dataset.sampler.use_workers(loader_kw.get("num_workers", 0))
        self.loader = DataLoader(dataset, **loader_kw)

    def __iter__(self) -> Iterator[dict]:
        ds = self.dataset
        ds._publish()
        epoch = ds.sampler.epoch
        for batch in batches(self.loader):   # an error stops the workers at once
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
        img, label = _named(decode_image, payload, lambda _i: self.rec_path, self.keys[i])
        return _to_tensor(np.ascontiguousarray(img)), torch.from_numpy(label)


def __getattr__(name: str) -> Any:
    """The image-decoding datasets live in cloudrec.torch_images (they build on
    RecordIterableDataset, so they are imported from there on first use)."""
    if name in ("ImageRecordDataset", "ResumableBatchSampler", "ResumableMapLoader"):
        from cloudrec import torch_images
        return getattr(torch_images, name)
    raise AttributeError(f"module 'cloudrec.torch' has no attribute {name!r}")
