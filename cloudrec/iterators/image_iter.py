"""``ImageIter``: MXNet's Python image iterator over `.rec`(+`.idx`) or image files, on any URL.

Same constructor, batches, pads and epoch behaviour as ``mx.image.ImageIter``
1.9.1 (spec §3.5): partitions of ``N // num_parts``, ``last_batch_handle``
pad / discard / roll_over, `.idx` line order, labels from the record header or
an image list.  What differs is speed and determinism: records come through
the reader layer (coalesced, concurrent ranged reads), and decode + augment
run in a thread pool (OpenCV releases the GIL) a couple of batches ahead,
each sample with its own Generator keyed by ``seed``, the epoch and its record
id, so the batches never depend on thread timing or on a resume.

Hooks a subclass (ImageDetIter) may override, as in MXNet: ``next_sample``,
``read_image``, ``imdecode``, ``check_valid_image``, ``augmentation_transform``,
``postprocess_data``, plus ``process_sample`` / ``write_sample`` (one worker's
job, and how one sample lands in the batch).
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.errors import ConfigError, ImageDecodeError, ImageTooLargeError
from cloudrec.image.augment_chain import apply_augmenters, decode_min_side
from cloudrec.image.create import CreateAugmenter
from cloudrec.image.decode import imdecode as _imdecode
from cloudrec.image.fused_chain import FusedChain
from cloudrec.image.reduced_decode import imdecode_reduced
from cloudrec.io.base import DataBatch, DataDesc, DataIter
from cloudrec.iterators._records import RecordSource
from cloudrec.iterators.image_sources import IndexedRecAdapter, list_entries
from cloudrec.iterators.image_state import ResumableImageIter
from cloudrec.iterators.lifecycle import release
from cloudrec.iterators.names import adapt_explicit
from cloudrec.iterators.sample_stream import (BrokenImageError, BrokenImageTooLargeError,
                                              SampleStream, _Resources)
from cloudrec.reader.sampler import EpochSampler

__all__ = ["ImageIter", "BrokenImageError", "BrokenImageTooLargeError"]

log = logging.getLogger(__name__)

_LABEL_DTYPES = ("int32", "float32", "int64", "float64")
#: hooks a fused augmenter chain would skip: overriding one turns the fusion off
_FUSE_BYPASSED = ("process_sample", "augmentation_transform", "postprocess_data")


#: ImageIter's keywords the name adapter may set, with their defaults
_DEFAULTS = {"shuffle": False, "part_index": 0, "num_parts": 1, "seed": 0,
             "last_batch_handle": "pad", "num_threads": None, "max_pixels": None,
             "truncated": "error", "part_mode": "mxnet", "cache": "none", "fetch_options": None}


class ImageIter(SampleStream, ResumableImageIter, DataIter):
    """MXNet's ImageIter: NCHW float32 batches of decoded, augmented images with labels.

    MXNet's arguments keep their meaning; ``kwargs`` go to ``CreateAugmenter``
    when ``aug_list`` is None.  cloudrec's own keyword arguments: ``seed``
    (shuffle order and augmenter randomness; None = fresh entropy),
    ``num_threads`` (decode/augment threads), ``on_error`` ('raise', or 'skip'
    to drop undecodable images and count them in ``num_skipped``),
    ``max_pixels`` (decompression-bomb limit), ``truncated`` ('error', or
    'mxnet' to return what libmxnet returned for a JPEG cut in its scan data),
    ``part_mode`` ('mxnet': MXNet's ``N // num_parts`` parts; 'even': cloudrec's
    global steps, equal batch counts and a state that resumes on another
    ``num_parts``), ``storage_options`` (fsspec), ``cache`` and
    ``fetch_options`` (RecordFetcher tuning).  Orders come from
    :class:`EpochSampler` (a pure function of seed and epoch); ``state_dict()``
    / ``load_state_dict()`` resume mid-epoch; batch labels are float32 whatever
    ``dtype`` (which types the parsed list labels), as in MXNet 1.9.1.

    With CreateAugmenter's plain chain (resize, crop, mirror, cast, normalise) the
    workers write each sample straight into its batch slot (:class:`FusedChain`, same
    bits).  Batch arrays are reused, but never while anything refers to them: keep the
    batch, its array, a view or a tensor made from it, and it stays as it was.
    """

    def __init__(self, batch_size: int, data_shape: Sequence[int], label_width: int = 1,
                 path_imgrec: Optional[str] = None, path_imglist: Optional[str] = None,
                 path_root: Optional[str] = None, path_imgidx: Optional[str] = None,
                 shuffle: bool = False, part_index: int = 0, num_parts: int = 1,
                 aug_list: Optional[List[Any]] = None, imglist: Optional[list] = None,
                 data_name: str = "data", label_name: str = "softmax_label",
                 dtype: str = "float32", last_batch_handle: str = "pad", *,
                 seed: Optional[int] = 0, num_threads: Optional[int] = None,
                 on_error: str = "raise", max_pixels: Optional[int] = None,
                 truncated: str = "error", part_mode: str = "mxnet",
                 storage_options: Optional[Dict[str, Any]] = None, cache: str = "none",
                 fetch_options: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, release, self._res.release)
        # cloudrec's names (rank, world_size, threads, last_batch, option objects) -> ImageIter's
        (shuffle, part_index, num_parts, seed, last_batch_handle, num_threads, max_pixels,
         truncated, part_mode, cache, fetch_options) = adapt_explicit(kwargs, dict(
             shuffle=shuffle, part_index=part_index, num_parts=num_parts, seed=seed,
             last_batch_handle=last_batch_handle, num_threads=num_threads,
             max_pixels=max_pixels, truncated=truncated, part_mode=part_mode, cache=cache,
             fetch_options=fetch_options), _DEFAULTS, "ImageIter").values()
        super().__init__(batch_size)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            # 0 made every batch empty, so next() never ended
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.check_data_shape(data_shape)  # before anything is opened
        assert path_imgrec or path_imglist or isinstance(imglist, list), \
            "one of path_imgrec, path_imglist or a list imglist is needed"
        assert dtype in _LABEL_DTYPES, dtype + " label not supported"
        assert last_batch_handle in ("pad", "discard", "roll_over"), \
            "last_batch_handle must be 'pad', 'discard' or 'roll_over'"
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        if part_mode not in ("mxnet", "even"):
            raise ConfigError(f"part_mode must be 'mxnet' or 'even', got {part_mode!r}")
        if part_mode == "even" and last_batch_handle == "roll_over":
            raise ConfigError("part_mode='even' pads or drops the last batch; roll_over needs "
                              "MXNet's parts (part_mode='mxnet')")
        self.part_mode = part_mode
        self.storage_options = dict(storage_options or {})
        self.max_pixels = max_pixels
        if truncated not in ("error", "mxnet"):
            raise ValueError("truncated must be 'error' or 'mxnet'")
        self.truncated = truncated
        self.on_error = on_error
        self.num_skipped = 0
        self.skipped: List[str] = []
        self.dtype = dtype

        # -- where the bytes come from
        self.imgrec = None
        self.dataset = None
        self.fetcher = None
        self.imgidx: Optional[list] = None
        self.path_imgrec = path_imgrec
        if path_imgrec:
            log.info("%s: loading recordio %s...", type(self).__name__, path_imgrec)
            if path_imgidx:
                # MXNet's ImageIter reads the listed records only (an .idx may list a subset)
                source = RecordSource(path_imgrec, path_imgidx, self.storage_options, cache,
                                      fetch_options, partial_index=True)
                self.dataset, self.fetcher = source.ds, source.fetcher
                self.imgrec = IndexedRecAdapter(source)
                self.imgidx = list(self.imgrec.keys)
            else:
                from cloudrec.recordio import MXRecordIO
                self.imgrec = MXRecordIO(path_imgrec, "r", storage_options=self.storage_options)
            self._res.reader = self.imgrec
        self._list_entries: Optional[List[Tuple[Any, np.ndarray, str]]] = None
        self.imglist: Optional[Dict[Any, Tuple[np.ndarray, str]]] = None
        if path_imglist:
            log.info("%s: loading image list %s...", type(self).__name__, path_imglist)
        self._list_entries, self._list_url = list_entries(path_imglist, imglist, dtype,
                                                          self.storage_options)
        if self._list_entries is not None:
            self.imglist = {k: (lab, p) for k, lab, p in self._list_entries}
        self.path_root = path_root
        self._root_fs = None

        # -- shapes
        data_shape = tuple(int(x) for x in data_shape)
        self.provide_data = [DataDesc(data_name, (batch_size,) + data_shape)]
        if label_width > 1:
            self.provide_label = [DataDesc(label_name, (batch_size, label_width), np.float32)]
        else:
            self.provide_label = [DataDesc(label_name, (batch_size,), np.float32)]
        self.batch_size = batch_size
        self.data_shape = data_shape
        self.label_width = label_width
        self.shuffle = shuffle

        # -- randomness: orders from the sampler, one Generator per sample from (seed, n)
        self.seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else int(seed)
        # -- the sample order: positions into the record table or the image list
        n = len(self._list_entries) if path_imgrec is None else (
            len(self.imgidx) if self.imgidx is not None else None)
        if n is None:
            assert not (shuffle or num_parts > 1 or part_mode == "even"), \
                "shuffle, num_parts > 1 and part_mode='even' need path_imgidx"
        if num_parts > 1:
            assert 0 <= part_index < num_parts, \
                f"part_index must be in [0, num_parts={num_parts}), got {part_index}"
        self.sampler: Optional[EpochSampler] = None
        if n is not None:
            even = part_mode == "even"
            self.sampler = EpochSampler(
                n, seed=self.seed, mode="global" if shuffle else "none", rank=part_index,
                world_size=num_parts, batch_size=batch_size,
                partition="steps" if even else "floor",
                last=("drop" if last_batch_handle == "discard" else "pad") if even else "pad")
        self._order: Optional[np.ndarray] = None
        self._is_pad: Optional[np.ndarray] = None
        self._seq_cache: Optional[list] = None
        self.num_image = None
        if self.sampler is not None:
            self.num_image = (len(self.sampler.part_ids) if self.sampler.fixed
                              else len(self.sampler.epoch_slice().ids))

        if aug_list is None:
            self.auglist = CreateAugmenter(data_shape, **kwargs)
        else:
            if kwargs:  # MXNet ignores them silently; say so
                log.warning("%s: aug_list is given, so these keywords are ignored: %s",
                            type(self).__name__, ", ".join(sorted(kwargs)))
            self.auglist = aug_list

        self._epoch = -1  # reset() below starts epoch 0
        self._wrap = 0  # times the stream wrapped to its start within this epoch (pad refill)
        self._extra = 0  # samples from an overriding next_sample (no position known)

        # -- threads
        if num_threads is None:
            num_threads = int(os.environ.get("MXNET_CPU_WORKER_NTHREADS", "0") or 0) or \
                min(8, os.cpu_count() or 1)
        self.num_threads = max(1, int(num_threads))
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pending: "deque[Any]" = deque()
        self._spares: List[np.ndarray] = []  # handed-out batch arrays, reused once released
        self._dests: Dict[int, np.ndarray] = {}  # batch number -> array of predicted slots
        self._fill_k = 0  # batch number being filled (since the last drop of the lookahead)
        self._pred_next = 0  # predicted slot of the next submission: batch number * size + slot
        self._chain: Optional[FusedChain] = None
        self._lookahead = max(2 * batch_size, 2 * self.num_threads)  # samples queued ahead
        # samples per pool task: ~4 runs per thread and batch, at most 16
        self._run_len = max(1, min(16, batch_size // (4 * self.num_threads)))
        self._queued = 0  # samples in self._pending's runs
        # top the lookahead up a run at a time: the main thread then holds the GIL for one
        # run's reads, not half a lookahead's, while the workers wait to take it back
        self._refill = self._run_len
        self._ready: "deque[Any]" = deque()  # results of the run being consumed
        self._local = threading.local()
        self._custom_next_sample = type(self).next_sample is not ImageIter.next_sample

        # -- state as MXNet's
        self.last_batch_handle = last_batch_handle
        self._clear_position()  # cur, the read gate and the rolled-over batch (_cache_*)
        self._stream = None
        self._stream_pos = self._stream_end = -1
        self._next_stream: Optional[tuple] = None  # the next epoch's, opened ahead
        self._budget: Optional[int] = None  # samples the last batch's padding may still read
        self._seq_no = 0  # records read so far without an .idx (for error messages)
        self._delivered = 0  # stream position after the last sample of the last batch returned
        self._start_consumed = 0  # the sampler's consumed count when this epoch's stream began
        self._batches_out = 0  # batches returned since then
        self._slot_ids: List[int] = []  # record ids of the batch being filled
        self._slot_pos: List[int] = []  # their stream positions
        self.reset()

    @property
    def stats(self) -> Dict[str, int]:
        """The record fetcher's counters (requests, bytes, retries, ...); empty without an .idx."""
        return self.fetcher.stats if self.fetcher is not None else {}

    # ------------------------------------------------------------------------------ MXNet API
    def check_data_shape(self, data_shape: Sequence[int]) -> None:
        """ImageIter produces 3-channel images only (as MXNet)."""
        if not len(data_shape) == 3:
            raise ValueError("data_shape should have length 3, with dimensions CxHxW")
        if not data_shape[0] == 3:
            raise ValueError("This iterator expects inputs to have 3 channels.")
        if min(int(x) for x in data_shape) < 1:
            raise ValueError(f"data_shape must be positive, got {tuple(data_shape)}")

    def next(self) -> DataBatch:
        """The next batch; pads, drops or rolls over the last one per ``last_batch_handle``."""
        batch_size = self.batch_size
        c, h, w = self.data_shape
        if self._cache_data is not None:
            batch_data, batch_label, i = self._cache_data, self._cache_label, self._cache_idx
            self._slot_ids = list(self._cache_ids or [])
            self._slot_pos = list(self._cache_pos or [])
        else:
            batch_data = self._new_batch_buffer()
            batch_label = np.zeros(self.provide_label[0][1], dtype=np.float32)
            self._slot_ids, self._slot_pos = [], []
            i = self._batchify(batch_data, batch_label)
        pad = batch_size - i
        if pad != 0:
            if self.last_batch_handle == "discard":
                self._end_batch(reuse=True)
                raise StopIteration
            if self.last_batch_handle == "roll_over" and self._cache_data is None:
                self._cache_data, self._cache_label, self._cache_idx = batch_data, batch_label, i
                self._cache_ids, self._cache_pos = list(self._slot_ids), list(self._slot_pos)
                self._delivered = self.num_image if self.num_image is not None else self._seq_no
                self._end_batch(reuse=False)
                raise StopIteration
            self._budget = pad if self.last_batch_handle == "pad" else None
            try:  # the lookahead would read a whole lookahead past the padding
                self._zero_tail(batch_data, self._batchify(batch_data, batch_label, i))
            finally:
                self._budget = None
            if self.last_batch_handle == "pad":
                self._allow_read = False
                self._drop_pending()  # the lookahead read past the padding
                self._delivered = self.num_image if self.num_image is not None else self._seq_no
            else:
                self._cache_data = self._cache_label = self._cache_idx = None
                self._cache_ids = None
        elif self._is_pad is not None:  # part_mode='even': the sampler padded this batch
            pad = int(self._is_pad[self._delivered - self.batch_size:self._delivered].sum())
        self._end_batch(reuse=True)  # a spare, written again only once the user lets go of it
        self._batches_out += 1
        if self.sampler is not None:
            self.sampler.consumed = self.sampler.consumed_after(
                self._start_consumed, self._batches_out) if not self.sampler.fixed \
                else self._delivered
        batch = DataBatch([batch_data], [batch_label], pad=pad)
        batch.record_ids = np.asarray(self._slot_ids, np.int64)
        return batch

    def next_sample(self) -> Tuple[Any, bytes]:
        """The next ``(label, image bytes)`` of the epoch, or StopIteration."""
        item = self._next_item()
        return item.label, self._payload(item)

    def read_image(self, fname: str) -> bytes:
        """The bytes of an image file named by the list, under ``path_root`` (any URL)."""
        fs, path = self._file_location(fname)
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {self._join_root(fname)}") from None

    def imdecode(self, s) -> np.ndarray:
        """Decode to HWC uint8 RGB; a failure names the sample (MXNet's "Broken image ...")."""
        where = getattr(self._local, "where", "")
        min_side = decode_min_side(self.auglist)  # > 0 only with ResizeAug(fast=True)
        try:
            if min_side > 0:  # the fast path: scaled JPEG decode, fast IDCT
                return imdecode_reduced(s, min_side, max_pixels=self.max_pixels,
                                        truncated=self.truncated)
            return _imdecode(s, max_pixels=self.max_pixels, truncated=self.truncated)
        except ImageDecodeError as e:
            cls = BrokenImageTooLargeError if isinstance(e, ImageTooLargeError) else BrokenImageError
            err = cls(f"Broken image {where}: {e}")
            err.url, err.key = e.url, getattr(self._local, "key", None)
            raise err from None

    def check_valid_image(self, data: np.ndarray) -> None:
        """Reject an image with an empty shape (MXNet skips those samples)."""
        if data.ndim == 0 or data.size == 0:
            raise RuntimeError("Data shape is wrong")

    def augmentation_transform(self, data: np.ndarray) -> np.ndarray:
        """Apply ``auglist`` in order, with this sample's Generator (resize+crop and
        cast+normalise pairs fused, same bits)."""
        return apply_augmenters(self.auglist, data, self.sample_rng)

    def postprocess_data(self, datum: np.ndarray) -> np.ndarray:
        """HWC -> CHW (made contiguous here, in the worker thread, not in the batch write)."""
        return np.ascontiguousarray(np.transpose(datum, (2, 0, 1)))

    def _fused_chain(self) -> Optional[FusedChain]:
        """``auglist`` as one fused step when it is CreateAugmenter's plain chain and no
        subclass hook would be bypassed (re-checked at every reset)."""
        cls = type(self)
        if any(getattr(cls, h) is not getattr(ImageIter, h) for h in _FUSE_BYPASSED):
            return None
        chain = FusedChain.match(self.auglist)
        return chain if chain is not None and chain.out_shape == self.data_shape else None

    @property
    def sample_rng(self) -> np.random.Generator:
        """The Generator of the sample this worker thread is processing."""
        rng = getattr(self._local, "rng", None)
        if rng is None:
            rng = self._local.rng = np.random.default_rng()
        return rng

    # ------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the worker threads and release readers (also done when the iterator is
        dropped: a finalizer holds only the pools and the reader, not the iterator)."""
        self._drop_pending()
        self._close_next_stream()
        self._pool = None
        self._finalizer()

    def __enter__(self) -> "ImageIter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
