"""ImageRecordIter: MXNet's C++ image record iterator, in Python, on any fsspec URL.

Takes MXNet's keyword arguments (spec §2.1; unknown ones raise ConfigError
naming the closest known one), reads records through the reader layer, and
decodes/augments them on a thread pool straight into batch arrays.

Deliberate differences from MXNet 1.9.1 (spec §2.5 and the issue):

* every ``reset()`` starts a full epoch at the start of the partition (MXNet
  skipped the records it had used as padding, apache/mxnet#8552); a
  ``reset()`` before any batch of the current epoch was read is a no-op;
* ``round_batch=False`` reports the true ``pad`` and zero-fills the pad
  slots (MXNet reported 0 and left stale memory there);
* ``batch.index`` holds the record ids (row of the dataset's record table;
  MXNet left zeros), ``batch.header_id`` the IRHeader ids; pad slots of
  ``round_batch=False`` have index -1;
* augmentation randomness is a pure function of (``seed_aug`` or ``seed``,
  epoch, record id): reproducible and independent of thread timing, different
  every epoch (MXNet: per-thread RNGs, not reproducible without ``seed_aug``,
  and identical every epoch with it);
* bad input raises a cloudrec exception naming the file and record (MXNet
  crashed with SIGFPE/segfaults or raised OpenCV assertions); an empty
  partition (``num_parts`` > records) raises ConfigError;
* an `.idx` that does not list every record raises when the span is read
  (MXNet read the unlisted records as part of the previous one's span);
* a JPEG truncated inside its scan data raises ImageDecodeError (MXNet's
  OpenCV 3.4 returned a partially decoded image);
* without ``path_imgidx`` the shuffle permutes the whole partition (MXNet:
  only inside ~64 MB chunks, so the same result for smaller partitions);
  ``shuffle_chunk_size``/``shuffle_chunk_seed`` are accepted and unused;
* ``ctx``, ``device_id`` and ``verbose`` are accepted and have no effect;
  ``preprocess_threads`` is used as given.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Dict, List, Optional

import numpy as np

from cloudrec.errors import ConfigError, RecordIOError
from cloudrec.io.base import DataBatch, DataDesc, DataIter
from cloudrec.reader.sampler import EpochSampler
from cloudrec.iterators.image_sources import load_label_map
from cloudrec.iterators.lifecycle import release, weak_step
from cloudrec.iterators.mean_image import load_mean_image, partition_mean_image
from cloudrec.iterators.names import front_end_kwargs
from cloudrec.iterators.record_sample import RecordSampleWriter
from cloudrec.iterators.record_params import IterParams, parse_kwargs
from cloudrec.pipeline.augment import DefaultAugmenter
from cloudrec.pipeline.batcher import BatchPipeline, BatchPlan, EpochPlans
from cloudrec.pipeline.writer import ImageWriter

__all__ = ["ImageRecordIter", "ImageRecordUInt8Iter", "ImageRecordInt8Iter"]

log = logging.getLogger(__name__)


class ImageRecordIter(RecordSampleWriter, DataIter):
    """Batches of decoded, augmented images from RecordIO files (MXNet's ImageRecordIter).

    Keyword arguments only, as in MXNet (spec §2.1), plus cloudrec's own:
    ``layout`` ('NCHW' or 'NHWC'; ``dtype='uint8', layout='NHWC'`` is the
    cheapest batch to hand to a GPU), ``shuffle_mode`` ('mxnet' exact MXNet
    orders, or the reader layer's 'global'/'block'/'shard'), ``part_mode``
    ('mxnet' or 'even': equal batch counts on every part), ``decode_reduce``
    (libjpeg DCT-scaled decoding of big JPEGs when ``resize`` is set),
    ``storage_options``, ``cache``, ``fetch_options`` (RecordFetcher tuning).
    Use as a context manager or call :meth:`close` to release threads and
    buffers; ``state_dict()``/``load_state_dict()`` resume mid-epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError("ImageRecordIter can only accept keyword arguments")
        self._closed = True  # until fully built: close() must be safe from __del__
        p = parse_kwargs(front_end_kwargs(kwargs, "ImageRecordIter"))
        self.params: IterParams = p
        super().__init__(p.batch.batch_size)
        C, H, W = p.data_shape
        self.data_shape = (C, H, W)
        self.label_width = p.parser.label_width
        self.dtype = p.out_dtype
        self.layout = p.extra.layout
        self.data_name, self.label_name = p.extra.data_name, p.extra.label_name
        so = p.extra.storage_options
        self._imglist = (load_label_map(p.parser.path_imglist, self.label_width, so)
                         if p.parser.path_imglist else None)
        self._aug = DefaultAugmenter(p.aug, self.data_shape, fast=p.extra.decode_reduce)
        self._source = None
        self._pipeline = None
        from cloudrec.iterators._records import RecordSource
        self._source = RecordSource(p.parser.path_imgrec, p.parser.path_imgidx, so,
                                    p.extra.cache, p.extra.fetch_options)
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_parts, self._source, None)
        try:
            self._build(p)
        except BaseException:
            self.close()
            raise
        if p.parser.verbose:
            log.info("ImageRecordIter: %s, partition %d/%d with %d records, %d decode threads",
                     p.parser.path_imgrec, p.parser.part_index, p.parser.num_parts,
                     self.part_ids.size, p.parser.preprocess_threads)
        self._current: Optional[DataBatch] = None
        self._consumed_from_start: Dict[tuple, int] = {}
        self._restart()

    def _build(self, p: IterParams) -> None:
        """Everything after the records are open; on error the caller closes them."""
        C, H, W = self.data_shape
        n = p.norm
        so = p.extra.storage_options
        self._even = p.extra.part_mode == "even"
        self.sampler = self._make_sampler(p)
        self.part_ids = (self.sampler.part_ids if self.sampler.fixed
                         else self._source.file_order)
        if len(self._source) == 0:  # "use fewer parts" would mislead: there is nothing
            idx = f" or its index {p.parser.path_imgidx}" if p.parser.path_imgidx else ""
            raise RecordIOError(f"ImageRecordIter: no records to read: the .rec{idx} is empty",
                                p.parser.path_imgrec)
        if self.part_ids.size == 0:
            raise ConfigError(
                f"ImageRecordIter: partition {p.parser.part_index} of {p.parser.num_parts} is "
                f"empty ({len(self._source)} records in {p.parser.path_imgrec}); "
                "use fewer parts (MXNet crashed here)")
        mean_img = None
        if n.mean_img:
            mean_img = load_mean_image(n.mean_img, (C, H, W), so)  # None: not made yet
        self._writer = ImageWriter(C, self.dtype, self.layout,
                                   (n.mean_r, n.mean_g, n.mean_b, n.mean_a),
                                   (n.std_r, n.std_g, n.std_b, n.std_a), n.scale, mean_img)
        if n.mean_img and mean_img is None:
            self._writer.mean_img = self._compute_mean_img(n.mean_img)
        # reduced-scale JPEG decoding only where the first step resizes anyway (resize > 0):
        # everything after it sees the same geometry, only the resampling source differs
        self._min_side = self._aug.min_side
        self._aug_seed = p.parser.seed_aug if p.parser.seed_aug is not None else p.record.seed
        self._rng_needed = (self._aug.needs_rng or n.rand_mirror
                            or n.max_random_contrast > 0 or n.max_random_illumination > 0)
        shape = (C, H, W) if self.layout == "NCHW" else (H, W, C)
        self._pipeline = BatchPipeline(self._source.fetch, weak_step(self._process_one), shape,
                                       self.dtype,
                                       self.label_width, p.parser.preprocess_threads,
                                       p.prefetch.prefetch_buffer)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _close_parts, self._source, self._pipeline)

    # -- descriptions ----------------------------------------------------------------------
    @property
    def provide_data(self) -> List[DataDesc]:
        shape = (self.batch_size,) + (self.data_shape if self.layout == "NCHW"
                                      else self.data_shape[1:] + self.data_shape[:1])
        return [DataDesc(self.data_name, shape, self.dtype, self.layout)]

    @property
    def provide_label(self) -> List[DataDesc]:
        shape = (self.batch_size,) if self.label_width == 1 else (self.batch_size,
                                                                   self.label_width)
        return [DataDesc(self.label_name, shape, np.float32, None)]

    def _make_sampler(self, p: IterParams) -> EpochSampler:
        """The iterator's order, partition and state: MXNet's fixed parts (``part_mode='mxnet'``,
        by count with an `.idx`, by bytes without) or cloudrec's global steps (``'even'``)."""
        rec, ps = p.record, p.parser
        mode = p.extra.shuffle_mode if rec.shuffle else "none"
        common = dict(seed=rec.seed, mode=mode, rank=ps.part_index, world_size=ps.num_parts,
                      batch_size=p.batch.batch_size)
        t = self._source.ds.table
        if self._even:
            return EpochSampler(t, partition="steps", last="pad", **common)
        sizes = np.array([sh.size for sh in self._source.ds.shards], np.int64)
        return EpochSampler(t, partition="mxnet-count" if self._source.indexed else "mxnet-bytes",
                            last="pad-next" if p.batch.round_batch else "fill",
                            base_order=self._source.file_order, shard_sizes=sizes, **common)

    @property
    def num_records(self) -> int:
        """Records in this iterator's partition (one epoch reads each exactly once)."""
        if self._even:
            sl = self._slice_at(0, 0)
            return int(sl.ids.size - sl.num_pad)
        return int(self.part_ids.size)

    @property
    def stats(self) -> Dict[str, int]:
        """The record fetcher's counters: requests, bytes, retries, failures, cache hits..."""
        return self._source.fetcher.stats

    @property
    def num_batches(self) -> int:
        """Batches one epoch of this partition yields (for progress bars and schedulers)."""
        return self.sampler.batches_per_epoch()

    # -- epoch planning --------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Record ids of the partition (the whole dataset under part_mode='even') in the
        order epoch ``epoch`` reads them."""
        return self.sampler.order(epoch)

    def _slice_at(self, epoch: int, consumed: int):
        s, x = self.sampler, self.params.extra
        saved = (s.epoch, s.consumed)
        s.epoch, s.consumed = int(epoch), int(consumed)
        try:
            return s.epoch_slice(worker=x.worker, num_workers=x.num_workers)
        finally:
            s.epoch, s.consumed = saved

    def _plans(self, epoch: int, consumed: int = 0) -> EpochPlans:
        """The batches left in ``epoch`` after ``consumed`` samples (all ranks' under 'even'),
        each with the global count consumed once it is used (``DataBatch.consumed``)."""
        sl = self._slice_at(epoch, consumed)
        # the order's windows, so the fetcher reads a block's bytes once (pads sit at the
        # end: dropped or repeated there, the indices into the slice's ids still hold)
        hinted = len(sl.chunk_starts) or sl.exclusive is not None
        plans = EpochPlans(**({"chunk_starts": sl.chunk_starts,
                               "touching_only": sl.exclusive is not None} if hinted else {}))
        for i, (ids, is_pad) in enumerate(sl.batches()):
            ids = ids.copy()
            if not self.params.batch.round_batch:
                ids[is_pad] = -1  # zero-filled slots, as MXNet's round_batch=False
            plans.append(BatchPlan(ids, int(is_pad.sum()), epoch, int(sl.steps[i])))
        return plans

    def _compute_mean_img(self, url: str) -> np.ndarray:
        """Mean of the partition's images after aug_default, saved to ``url`` (as MXNet does)."""
        seed = (self.params.parser.seed_aug if self.params.parser.seed_aug is not None
                else self.params.record.seed)
        return partition_mean_image(self._source.fetch(self.part_ids), self.data_shape,
                                    self._aug, seed, self._where, url,
                                    self.params.extra.storage_options)

    # -- DataIter --------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of epoch ``epoch`` (its shuffle order and augmentations)."""
        self._check_open()
        self.sampler.set_epoch(int(epoch))
        self.sampler.consumed = 0
        self._restart()

    #: build the next epoch's first batch ahead at the end of each one (see BatchPipeline.start):
    #: no idle decode threads across ``reset()``; off for single-epoch users (torch dataset)
    _speculate = True

    def _restart(self) -> None:
        s = self.sampler
        self.epoch, self._served = s.epoch, 0
        self._start_consumed = s.consumed
        self._current = None
        nxt = ((s.epoch + 1, 0), self._plans(s.epoch + 1, 0)) if self._speculate else None
        self._pipeline.start(self._plans(s.epoch, s.consumed), key=(s.epoch, s.consumed),
                             next_plans=nxt)

    def state_dict(self) -> Dict[str, Any]:
        """Where the iterator is, as the sampler's state (see :class:`EpochSampler`).

        Under ``part_mode='even'`` it is global: loading it on any part, with any
        ``num_parts``, resumes every part at the next unread sample; under
        MXNet's partition it only fits the same ``num_parts``.
        """
        return self.sampler.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resume after ``state`` (same shuffle order and augmentations); the skipped batches
        are not read.  Also takes the old ``{"epoch", "batches"}`` form of this part."""
        self._check_open()
        if "version" not in state and "batches" in state:
            state = {**self.sampler.state_dict(), "epoch": int(state["epoch"]),
                     "consumed": self.sampler.consumed_after(0, int(state["batches"]))}
        self.sampler.load_state_dict(state)
        self._restart()

    def reset(self) -> None:
        """Start the next epoch from the start of the partition (full epoch, always)."""
        self._check_open()
        if self._served == 0:
            return
        self.set_epoch(self.epoch + 1)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on a closed ImageRecordIter")

    def iter_next(self) -> bool:
        self._check_open()
        buf = self._pipeline.next()
        if buf is None:
            self._current = None
            return False
        self._served += 1
        s = self.sampler
        step = buf.plan.step if buf.plan.step >= 0 else self._served - 1
        s.consumed = self._consumed_after(step + 1)
        data, label = buf.data, buf.label
        if self.label_width == 1:
            label = label.reshape(-1)
        ids = buf.plan.ids
        self._current = DataBatch([data], [label], pad=int(buf.plan.pad), index=ids.copy(),
                                  provide_data=self.provide_data,
                                  provide_label=self.provide_label)
        self._current.header_id = buf.header_id
        self._current.record_ids = ids
        self._current.epoch, self._current.consumed = int(buf.plan.epoch), int(s.consumed)
        return True

    def _consumed_after(self, steps: int) -> int:
        """The sampler's count after ``steps`` batches of this epoch.  From an epoch's start
        (no closed legs) it depends only on the layout, so under ``'steps'`` (whose count
        rebuilds the layout each call) it is computed once per layout, not per batch."""
        s = self.sampler
        if s.fixed or self._start_consumed != 0:
            return s.consumed_after(self._start_consumed, steps)
        key = (steps, s.num_records, s.world_size, s.num_workers, s.batch_size, s.last)
        got = self._consumed_from_start.get(key)
        if got is None:
            if len(self._consumed_from_start) > 4096:
                self._consumed_from_start.clear()
            got = self._consumed_from_start[key] = s.consumed_after(0, steps)
        return got

    def next(self) -> DataBatch:
        if self.iter_next():
            return self._current
        raise StopIteration

    def getdata(self):
        return self._current.data if self._current is not None else None

    def getlabel(self):
        return self._current.label if self._current is not None else None

    def getpad(self) -> Optional[int]:
        return self._current.pad if self._current is not None else None

    def getindex(self):
        return self._current.index if self._current is not None else None

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the pipeline, join its threads, release buffers and file handles."""
        if getattr(self, "_closed", True) and getattr(self, "_source", None) is None:
            return
        self._closed = True
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()
        self._pipeline = None
        self._source = None
        self._current = None

    def __enter__(self) -> "ImageRecordIter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _close_parts(source, pipeline) -> None:
    release(pipeline.close if pipeline is not None else None,
            source.close if source is not None else None)


def ImageRecordUInt8Iter(**kwargs: Any) -> ImageRecordIter:
    """ImageRecordIter with dtype='uint8' (MXNet's deprecated alias)."""
    kwargs.setdefault("dtype", "uint8")
    return ImageRecordIter(**kwargs)


def ImageRecordInt8Iter(**kwargs: Any) -> ImageRecordIter:
    """ImageRecordIter with dtype='int8' (MXNet's deprecated alias)."""
    kwargs.setdefault("dtype", "int8")
    return ImageRecordIter(**kwargs)
