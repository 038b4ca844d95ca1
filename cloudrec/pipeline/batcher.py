"""Threaded decode -> augment -> write-into-batch pipeline with a bounded prefetch queue.

``cv2.imdecode``, ``cv2.resize`` and numpy's arithmetic release the GIL, so a
pool of ``preprocess_threads`` Python threads decodes in parallel.  Each image
is written straight into its slot of a batch array allocated once per batch,
with the channel swap, mirror and normalisation fused into that write.  A
producer thread plans batches and submits their images; up to
``prefetch_buffer`` batches wait, finished or in flight, in a bounded queue.
Slot contents depend only on the record and the per-image RNG, never on which
thread ran it or when (apache/mxnet#7708).
"""
from __future__ import annotations

import queue
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cloudrec.errors import CloudrecError, ImageDecodeError

__all__ = ["BatchPlan", "BatchBuffers", "ImageWriter", "decode_image", "BatchPipeline",
           "PipelineClosed"]

_IMREAD = {1: cv2.IMREAD_GRAYSCALE, 3: cv2.IMREAD_COLOR, 4: cv2.IMREAD_UNCHANGED}
_REDUCED = {1: (cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_GRAYSCALE_4,
                cv2.IMREAD_REDUCED_GRAYSCALE_8),
            3: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_COLOR_4,
                cv2.IMREAD_REDUCED_COLOR_8)}


class PipelineClosed(CloudrecError):
    """The iterator was closed while a batch was being read."""


def decode_image(buf: memoryview, channels: int, where: str = "",
                 min_side: int = 0) -> np.ndarray:
    """Decode image bytes as MXNet does for ``data_shape[0]`` (1 gray, 3 BGR, 4 BGRA).

    With ``min_side > 0`` a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as
    long as its shorter side stays >= ``min_side`` (libjpeg's DCT scaling).
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    if arr.size == 0:
        raise ImageDecodeError(f"empty image payload{where}")
    flag = _IMREAD[channels]
    if min_side > 0 and channels in _REDUCED and arr[:2].tobytes() == b"\xff\xd8":
        from cloudrec.image.decode import image_size
        size = image_size(arr)
        if size:
            short = min(size)
            for k, f in zip((8, 4, 2), reversed(_REDUCED[channels])):
                if short // k >= min_side:
                    flag = f
                    break
    img = cv2.imdecode(arr, flag)
    if img is None or img.size == 0:
        raise ImageDecodeError(f"cannot decode image payload of {arr.size} bytes "
                               f"(broken, truncated or not an image){where}")
    if img.dtype != np.uint8:  # 16-bit/float PNG or TIFF with IMREAD_UNCHANGED: to 8 bits
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max
                                         if img.dtype.kind in "ui" else 255.0))
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if channels == 4 and (img.ndim != 3 or img.shape[2] != 4):
        c = 1 if img.ndim == 2 else img.shape[2]
        raise ImageDecodeError(f"expected 4 channels, got {c}{where}")
    return img


class ImageWriter:
    """Writes one augmented OpenCV-order image into a batch slot.

    BGR(A) -> RGB(A), optional mirror, HWC -> CHW (or kept HWC), and for float
    outputs MXNet's ``(x - mean) * float32(contrast_scaled / std) + illum / std``.
    uint8 copies raw pixels; int8 stores ``saturate(x - round(mean))``.
    """

    def __init__(self, channels: int, dtype: np.dtype, layout: str, mean: Sequence[float],
                 std: Sequence[float], scale: float, mean_img: Optional[np.ndarray] = None
                 ) -> None:
        self.C = channels
        self.dtype = np.dtype(dtype)
        self.chw = layout == "NCHW"
        self.mean = np.asarray(mean[:channels], np.float32)
        self.std = np.asarray(std[:channels], np.float32)
        self.scale = np.float32(scale)
        self.mean_img = mean_img  # (C, H, W) float32 in output channel order, or None
        self.float_out = self.dtype.kind == "f"
        self.identity = (not self.float_out) or (mean_img is None and not self.mean.any()
                                                 and (self.std == 1).all() and scale == 1)

    def _source_channels(self, img: np.ndarray) -> List[np.ndarray]:
        """Contiguous source planes in output order (R, G, B, A or gray)."""
        if img.ndim == 2:
            return [img]
        if self.C == 1:
            return [np.ascontiguousarray(img[..., 0])]
        planes = cv2.split(img)
        return [planes[k] for k in (2, 1, 0, 3)[:self.C]]

    def write(self, img: np.ndarray, out: np.ndarray, mirror: bool,
              contrast: float = 1.0, illumination: float = 0.0) -> None:
        """Fill ``out`` (C,H,W or H,W,C) from ``img`` (H,W[,C] uint8 BGR/BGRA/gray)."""
        if mirror:
            img = cv2.flip(np.ascontiguousarray(img), 1)
        if self.dtype == np.uint8 and not self.chw and self.C == 3 and img.ndim == 3:
            cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2RGB, dst=out)
            return
        chans = self._source_channels(img)
        views = [out[c] if self.chw else out[..., c] for c in range(self.C)]
        if self.dtype == np.uint8:
            for v, s in zip(views, chans):
                v[...] = s
            return
        if self.dtype == np.int8:
            mean = (np.rint(self.mean_img) if self.mean_img is not None
                    else np.rint(self.mean).reshape(-1, 1, 1))
            for c, (v, s) in enumerate(zip(views, chans)):
                v[...] = np.clip(s.astype(np.int16) - mean[c].astype(np.int16), -128, 127)
            return
        k = np.float32(contrast) * self.scale / self.std if contrast != 1.0 \
            else self.scale / self.std
        illum = np.float32(illumination) / self.std if illumination else None
        direct = self.dtype == np.float32 and self.chw
        tmp = None if direct else np.empty(chans[0].shape, np.float32)
        for c, (v, s) in enumerate(zip(views, chans)):
            dst = v if direct else tmp
            m = self.mean_img[c] if self.mean_img is not None else self.mean[c]
            np.copyto(dst, s, casting="unsafe")  # exact uint8 -> float32, SIMD
            np.subtract(dst, m, out=dst)
            np.multiply(dst, k[c], out=dst)
            if illum is not None:
                np.add(dst, illum[c], out=dst)
            if not direct:
                v[...] = tmp


@dataclass
class BatchPlan:
    """One batch to build: record id per slot (-1 = zero-filled pad) and the pad count."""

    ids: np.ndarray
    pad: int
    epoch: int


class BatchBuffers:
    """A batch being built: data and label arrays plus the per-slot futures."""

    __slots__ = ("plan", "data", "label", "header_id", "futures")

    def __init__(self, plan: BatchPlan, data_shape: Tuple[int, ...], dtype: np.dtype,
                 label_width: int, data: Optional[np.ndarray] = None) -> None:
        b = plan.ids.shape[0]
        self.plan = plan
        self.data = data if data is not None else np.empty((b,) + tuple(data_shape), dtype)
        self.label = np.zeros((b, label_width), np.float32)
        self.header_id = np.full(b, -1, np.int64)
        self.futures: List[Future] = []


_END = object()


class BatchPipeline:
    """Runs plans through ``process(payload, rid, slot, buffers)`` on a thread pool.

    ``fetch(ids) -> iter((rid, payload))`` supplies record bytes (one stream
    per epoch, so the fetcher's read-ahead spans batch boundaries).  ``next()``
    returns finished :class:`BatchBuffers` in plan order, or None at the end of
    the epoch; errors from any stage are raised there.
    """

    def __init__(self, fetch: Callable[[Iterable[int]], Iterator[Tuple[int, bytes]]],
                 process: Callable[[bytes, int, int, BatchBuffers], None],
                 data_shape: Tuple[int, ...], dtype: np.dtype, label_width: int,
                 threads: int, prefetch: int) -> None:
        self._fetch = fetch
        self._process = process
        self._shape, self._dtype, self._lw = tuple(data_shape), np.dtype(dtype), label_width
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cloudrec-decode")
        self._prefetch = prefetch
        self._queue: Optional[queue.Queue] = None
        self._producer: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._closed = False
        # data arrays handed to the consumer; one is reused once nobody else references it
        self._handed: "deque[np.ndarray]" = deque(maxlen=prefetch + 2)
        self._handed_lock = threading.Lock()

    def _data_array(self, batch: int) -> Optional[np.ndarray]:
        """A handed-out data array the consumer has dropped (no batch, no view keeps it).

        Reusing it saves the page faults of a fresh multi-MB allocation per batch.
        Every slot is rewritten (image or zeros), so no stale content survives.
        """
        shape = (batch,) + self._shape
        with self._handed_lock:
            for i in range(len(self._handed)):
                a = self._handed[i]
                # references: the deque, ``a`` and getrefcount's argument
                if sys.getrefcount(a) == 3 and a.shape == shape:
                    del self._handed[i]
                    return a
                del a
        return None

    # -- epoch control ---------------------------------------------------------------------
    def start(self, plans: Sequence[BatchPlan]) -> None:
        """Begin producing the batches of ``plans`` (stops any epoch in progress)."""
        if self._closed:
            raise PipelineClosed("the iterator is closed")
        self.stop()
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self._prefetch)
        self._producer = threading.Thread(target=self._produce,
                                          args=(list(plans), self._queue, self._stop),
                                          name="cloudrec-batcher", daemon=True)
        self._producer.start()

    def _put(self, q: queue.Queue, item: Any, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, plans: List[BatchPlan], q: queue.Queue, stop: threading.Event) -> None:
        stream = None
        try:
            wanted = [p.ids[p.ids >= 0] for p in plans]
            all_ids = np.concatenate(wanted) if wanted else np.zeros(0, np.int64)
            stream = self._fetch(all_ids)
            for plan in plans:
                if stop.is_set():
                    return
                buf = BatchBuffers(plan, self._shape, self._dtype, self._lw,
                                   self._data_array(plan.ids.shape[0]))
                for slot, rid in enumerate(plan.ids.tolist()):
                    if stop.is_set():
                        return
                    if rid < 0:
                        buf.data[slot] = 0
                        continue
                    got, payload = next(stream)
                    if got != rid:  # the fetcher promises request order
                        raise RuntimeError(f"fetcher returned record {got}, expected {rid}")
                    buf.futures.append(self._pool.submit(self._process, payload, rid, slot, buf))
                if not self._put(q, buf, stop):
                    return
            self._put(q, _END, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(q, exc, stop)
        finally:
            if stream is not None and hasattr(stream, "close"):
                try:
                    stream.close()
                except Exception:
                    pass

    def next(self) -> Optional[BatchBuffers]:
        """The next finished batch, or None at the end of the epoch."""
        if self._closed:
            raise PipelineClosed("the iterator is closed")
        q = self._queue
        if q is None:
            return None
        item = q.get()
        if item is _END:
            try:
                q.put_nowait(_END)  # stay at the end until the next start()
            except queue.Full:
                pass
            return None
        if isinstance(item, BaseException):
            self._queue = None
            raise item
        try:
            for f in item.futures:
                f.result()
        except BaseException:
            self._queue = None
            self.stop()
            raise
        item.futures = []
        with self._handed_lock:
            self._handed.append(item.data)
        return item

    def stop(self) -> None:
        """Stop the current epoch's producer and drop its queued batches."""
        self._stop.set()
        if self._producer is not None:
            q = self._queue
            while self._producer.is_alive():
                if q is not None:
                    try:
                        while True:
                            b = q.get_nowait()
                            if isinstance(b, BatchBuffers):
                                for f in b.futures:
                                    f.cancel()
                    except queue.Empty:
                        pass
                self._producer.join(timeout=0.05)
            self._producer = None
            if q is not None:  # wake a consumer blocked in next() on this queue
                try:
                    q.put_nowait(_END)
                except queue.Full:
                    pass
        self._queue = None

    def close(self) -> None:
        """Stop producing, cancel queued work, join every thread, release buffers."""
        if self._closed:
            return
        self.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._handed_lock:
            self._handed.clear()
        self._closed = True
