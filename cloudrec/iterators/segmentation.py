"""SegmentationIter: batches of (image, mask) from image+mask records at any URL; and
``write_seg_records`` to pack them.  The record format is :mod:`cloudrec.image.segmentation`."""
from __future__ import annotations

import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.errors import ConfigError
from cloudrec.image.seg_augmenters import CreateSegAugmenter, SegAugmenter
from cloudrec.image.segmentation import decode_seg, pack_seg
from cloudrec.io import DataBatch, DataDesc, DataIter
from cloudrec.iterators._records import RecordSource
from cloudrec.iterators.lifecycle import release, weak_step
from cloudrec.iterators.names import adapt_explicit
from cloudrec.iterators.sample_rng import keyed_generator
from cloudrec.pipeline.batcher import BatchBuffers, BatchPipeline, BatchPlan
from cloudrec.reader.sampler import EpochSampler

__all__ = ["SegmentationIter", "write_seg_records"]


def write_seg_records(rec_url: str, samples: Iterable[Sequence[Any]],
                      idx_url: Optional[str] = None, storage_options: Optional[Dict] = None,
                      img_fmt: str = ".jpg", quality: int = 95) -> int:
    """Write ``samples`` of ``(image, mask[, extra])`` as segmentation records (keys 0..n-1)
    to a `.rec` + `.idx` at any URL; returns the record count.  Arguments as ``pack_seg``."""
    from cloudrec.recordio import MXIndexedRecordIO
    if idx_url is None:
        idx_url = rec_url[:-4] + ".idx" if rec_url.endswith(".rec") else rec_url + ".idx"
    w = MXIndexedRecordIO(idx_url, rec_url, "w", storage_options=storage_options)
    n = 0
    try:
        for n, sample in enumerate(samples, 1):
            extra = sample[2] if len(sample) > 2 else ()
            w.write_idx(n - 1, pack_seg(sample[0], sample[1], id=n - 1, extra=extra,
                                        img_fmt=img_fmt, quality=quality))
    finally:
        w.close()
    return n


_DEFAULTS = {"shuffle": False, "seed": 0, "part_index": 0, "num_parts": 1,
             "last_batch_handle": "pad", "cache": "none", "fetch_options": None,
             "preprocess_threads": 2}


class SegmentationIter(DataIter):
    """Batches of (image NCHW float32, mask NHW) from segmentation records at any URL.

    Built from the same parts as every iterator: records through the one
    record source (``.idx`` ranged reads, optional shard cache), orders and
    parts from ``EpochSampler`` (shuffle = seeded global permutation per epoch,
    ``part_index``/``num_parts`` = ranks, pad or discard the last batch), and
    decode + joint augmentation on ``BatchPipeline``'s threads with a Generator
    derived from (seed, epoch, record id), so a run repeats exactly regardless
    of thread timing.  ``state_dict()`` resumes mid-epoch, also on another
    number of parts.  ``fetch_options`` tune the RecordFetcher; ``kwargs`` go
    to CreateSegAugmenter.
    """

    def __init__(self, batch_size: int, data_shape: Sequence[int], path_imgrec: Any,
                 path_imgidx: Any = None, shuffle: bool = False, seed: int = 0,
                 part_index: int = 0, num_parts: int = 1,
                 aug_list: Optional[List[SegAugmenter]] = None, data_name: str = "data",
                 label_name: str = "mask", mask_dtype: Any = np.int32,
                 last_batch_handle: str = "pad", storage_options: Optional[Dict] = None,
                 cache: str = "none", fetch_options: Optional[Dict[str, Any]] = None,
                 preprocess_threads: int = 2, prefetch_buffer: int = 2, **kwargs: Any) -> None:
        self._pipeline: Optional[BatchPipeline] = None
        self._source: Optional[RecordSource] = None
        # cloudrec's names (rank, world_size, threads, last_batch, option objects) -> its own
        (shuffle, seed, part_index, num_parts, last_batch_handle, cache, fetch_options,
         preprocess_threads) = adapt_explicit(kwargs, dict(
             shuffle=shuffle, seed=seed, part_index=part_index, num_parts=num_parts,
             last_batch_handle=last_batch_handle, cache=cache, fetch_options=fetch_options,
             preprocess_threads=preprocess_threads), _DEFAULTS, "SegmentationIter").values()
        super().__init__(batch_size)
        data_shape = tuple(int(x) for x in data_shape)
        if len(data_shape) != 3 or data_shape[0] not in (1, 3):
            raise ConfigError(f"data_shape must be (channels 1 or 3, height, width), "
                              f"got {data_shape}")
        if last_batch_handle not in ("pad", "discard"):
            raise ConfigError(f"last_batch_handle must be 'pad' or 'discard', "
                              f"got {last_batch_handle!r}")
        self.data_shape = data_shape
        self.seed = int(seed)
        self.mask_dtype = np.dtype(mask_dtype)
        self.auglist = CreateSegAugmenter(data_shape, **kwargs) if aug_list is None \
            else list(aug_list)
        self._source = RecordSource(path_imgrec, path_imgidx or "", storage_options, cache,
                                    fetch_options)
        self.ds, self.fetcher = self._source.ds, self._source.fetcher
        self.sampler = EpochSampler(len(self.ds), seed=self.seed,
                                    mode="global" if shuffle else "none", rank=part_index,
                                    world_size=num_parts, batch_size=batch_size,
                                    last="pad" if last_batch_handle == "pad" else "drop")
        self.provide_data = [DataDesc(data_name, (batch_size,) + data_shape)]
        self.provide_label = [DataDesc(label_name, (batch_size,) + data_shape[1:],
                                       self.mask_dtype)]
        self._pipeline = BatchPipeline(self._source.fetch, weak_step(self._process), data_shape,
                                       np.float32, data_shape[1:], max(1, int(preprocess_threads)),
                                       max(1, int(prefetch_buffer)), label_dtype=self.mask_dtype)
        self._finalizer = weakref.finalize(self, _release, self._pipeline, self._source)
        self.epoch = -1
        self._served, self._start = 0, 0
        self.reset()

    @property
    def stats(self) -> Dict[str, int]:
        """The record fetcher's counters (requests, bytes, retries, ...)."""
        return self.fetcher.stats

    # ----- epochs
    def reset(self) -> None:
        """Start the next epoch (the first call starts epoch 0)."""
        self.epoch += 1
        self.sampler.set_epoch(self.epoch)
        self._restart()

    def _restart(self) -> None:
        s = self.sampler
        self._served, self._start = 0, s.consumed
        plans = [BatchPlan(ids.copy(), int(pad.sum()), s.epoch)
                 for ids, pad in s.epoch_slice().batches()]
        self._pipeline.start(plans)

    def state_dict(self) -> Dict[str, Any]:
        """Progress (seed, epoch, samples consumed by all ranks): restores the exact next batch."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resume from ``state_dict()`` output, also with another number of ranks."""
        self.sampler.load_state_dict(state)
        self.seed = self.sampler.seed
        self.epoch = self.sampler.epoch
        self._restart()

    def close(self) -> None:
        """Stop the decode threads and release the records (also done when dropped)."""
        self._finalizer()

    def __enter__(self) -> "SegmentationIter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- samples
    def sample_rng(self, record_id: int) -> np.random.Generator:
        """The Generator that augments ``record_id`` in the current epoch: this thread's,
        re-keyed (:func:`~cloudrec.iterators.sample_rng.keyed_generator`, a few us instead
        of a SeedSequence's 30-80), so use it for this record before asking for another."""
        return keyed_generator((self.seed, self.epoch, int(record_id)))

    def load_sample(self, record_id: int, payload: bytes) -> Tuple[np.ndarray, np.ndarray]:
        """Decode and jointly augment one record; returns (CHW float32 image, HW mask)."""
        where = self.ds.record_url(record_id)
        key = self.ds.table.key[record_id]
        key = key.item() if hasattr(key, "item") else key
        c, h, w = self.data_shape
        _rec, image, mask = decode_seg(payload, 0 if c == 1 else 1, where, key)
        rng = self.sample_rng(record_id)
        for aug in self.auglist:
            image, mask = aug(image, mask, rng)
        if image.shape[:2] != (h, w) or mask.shape[:2] != (h, w):
            raise ConfigError(f"after augmentation the image is {image.shape[:2]} and the mask "
                              f"{mask.shape[:2]}, data_shape wants {(h, w)}: add a crop or "
                              f"resize ({where}, record key {key!r})")
        if mask.ndim == 3:
            mask = mask[:, :, 0]
        return np.asarray(image, np.float32).transpose(2, 0, 1), mask

    def _process(self, payload: bytes, rid: int, slot: int, buf: BatchBuffers) -> None:
        image, mask = self.load_sample(rid, payload)
        buf.data[slot] = image
        buf.label[slot] = mask

    def next(self) -> DataBatch:
        buf = self._pipeline.next()
        if buf is None:
            raise StopIteration
        self._served += 1
        s = self.sampler
        s.consumed = s.consumed_after(self._start, self._served)
        return DataBatch([buf.data], [buf.label], pad=int(buf.plan.pad),
                         index=buf.plan.ids.copy(), provide_data=self.provide_data,
                         provide_label=self.provide_label)

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch()


def _release(pipeline: BatchPipeline, source: RecordSource) -> None:
    release(pipeline.close, source.close)
