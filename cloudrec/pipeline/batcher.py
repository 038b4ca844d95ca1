"""Threaded decode -> augment -> write-into-batch pipeline with a bounded prefetch queue.

``cv2.imdecode``, ``cv2.resize`` and numpy's arithmetic release the GIL, so a
pool of ``preprocess_threads`` Python threads decodes in parallel.  Each image
is written straight into its slot of a batch array, with the channel swap,
mirror and normalisation fused into that write.  A producer thread plans
batches and hands their images to the pool in runs of consecutive slots (one
task per run, not per image: fewer futures, wake-ups and GIL hand-offs); up to
``prefetch_buffer`` batches wait, finished or in flight, in a bounded queue.
Slot contents depend only on the record and the per-image RNG, never on which
thread ran it or when (apache/mxnet#7708).

Batch arrays are reused (see :class:`BatchArrayPool`): a batch handed out stays
valid for as long as the caller keeps a reference to it or to any view of it
(``batch.data[0]``, a slice, ``torch.from_numpy``); once every reference is
dropped its memory is refilled by a later batch.  Copy a batch to keep its values
while dropping the array itself.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.errors import CloudrecError
from cloudrec.pipeline.batch_parts import (BatchArrayPool, chunk_size, read_slots,
                                           stream_slots, yield_gil)

__all__ = ["BatchPlan", "EpochPlans", "BatchBuffers", "BatchPipeline", "BatchArrayPool",
           "PipelineClosed", "chunk_size"]

class PipelineClosed(CloudrecError):
    """The iterator was closed while a batch was being read."""


@dataclass
class BatchPlan:
    """One batch to build: record id per slot (-1 = zero-filled pad), the pad count, its epoch
    and ``step``: the rank batch number the sampler counts progress by."""

    ids: np.ndarray
    pad: int
    epoch: int
    step: int = -1


class EpochPlans(list):
    """An epoch's plans plus ``fetch_hints``: keyword arguments for ``fetch`` (an
    EpochSlice's ``chunk_starts``/``touching_only``, which keep a block order's bytes read
    once); the hints index the epoch's ids with pads removed, as ``fetch`` receives them."""

    def __init__(self, plans: Iterable[BatchPlan] = (), **fetch_hints: Any) -> None:
        super().__init__(plans)
        self.fetch_hints = fetch_hints


def _epoch_plans(plans: Sequence[BatchPlan]) -> EpochPlans:
    return EpochPlans(plans, **getattr(plans, "fetch_hints", {}))


class BatchBuffers:
    """A batch being built: data and label arrays, the futures of its pool tasks, and
    ``done``: set once every task submitted for it has finished (or was cancelled), so the
    consumer wakes once per batch instead of once per task."""

    __slots__ = ("plan", "data", "label", "header_id", "futures", "done", "_pending", "_lock")

    def __init__(self, plan: BatchPlan, data_shape: Tuple[int, ...], dtype: np.dtype,
                 label_width: Any, data: Optional[np.ndarray] = None,
                 label_dtype: Any = np.float32) -> None:
        b = plan.ids.shape[0]
        self.plan = plan
        self.data = data if data is not None else np.empty((b,) + tuple(data_shape), dtype)
        # label_width: labels per sample, or a per-sample label shape (a segmentation mask)
        lshape = tuple(label_width) if isinstance(label_width, (tuple, list)) else (label_width,)
        self.label = np.zeros((b,) + lshape, label_dtype)
        self.header_id = np.full(b, -1, np.int64)
        self.futures: List[Future] = []
        self.done = threading.Event()
        self._pending = 1  # the producer's own count, dropped by seal() once all is submitted
        self._lock = threading.Lock()

    def add(self, future: Future) -> None:
        """Track one pool task of this batch (call before :meth:`seal`)."""
        with self._lock:
            self._pending += 1
        self.futures.append(future)
        future.add_done_callback(self._task_done)  # also runs when the task is cancelled

    def seal(self) -> None:
        """Every task of the batch is submitted: ``done`` is set once they have all finished."""
        self._task_done(None)

    def _task_done(self, _future: Optional[Future]) -> None:
        with self._lock:
            self._pending -= 1
            last = self._pending == 0
        if last:
            self.done.set()


_END = object()


class _Speculation:
    """The next epoch's batches, built ahead into their own queue until start() adopts them."""

    __slots__ = ("key", "plans", "queue", "adopted")

    def __init__(self, key: Any, plans: List[BatchPlan], q: queue.Queue) -> None:
        self.key, self.plans, self.queue, self.adopted = key, plans, q, threading.Event()


def _same_plans(a: Sequence[BatchPlan], b: Sequence[BatchPlan]) -> bool:
    return len(a) == len(b) and all(
        x.pad == y.pad and x.epoch == y.epoch and x.step == y.step
        and np.array_equal(x.ids, y.ids) for x, y in zip(a, b))


def _drain(q: Optional[queue.Queue]) -> None:
    """Empty ``q``, cancelling the queued work of the batches in it."""
    if q is None:
        return
    try:
        while True:
            b = q.get_nowait()
            if isinstance(b, BatchBuffers):
                for f in b.futures:
                    f.cancel()
    except queue.Empty:
        pass


class BatchPipeline:
    """Runs plans through ``process(payload, rid, slot, buffers)`` on a thread pool.

    ``fetch(ids) -> iter((rid, payload))`` supplies record bytes (one stream
    per epoch, so the fetcher's read-ahead spans batch boundaries).  ``next()``
    returns finished :class:`BatchBuffers` in plan order, or None at the end of
    the epoch; errors from any stage are raised there.
    """

    def __init__(self, fetch: Callable[[Iterable[int]], Iterator[Tuple[int, bytes]]],
                 process: Callable[[bytes, int, int, BatchBuffers], None],
                 data_shape: Tuple[int, ...], dtype: np.dtype, label_width: Any,
                 threads: int, prefetch: int, label_dtype: Any = np.float32) -> None:
        self._fetch = fetch
        self._process = process
        self._shape, self._dtype, self._lw = tuple(data_shape), np.dtype(dtype), label_width
        self._label_dtype = np.dtype(label_dtype)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cloudrec-decode")
        self._prefetch = prefetch
        self._queue: Optional[queue.Queue] = None
        self._producer: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._closed = False
        self._threads = max(1, int(threads))
        # queued + being built + being filled + held by the consumer (batch and previous)
        self._arrays = BatchArrayPool(prefetch + 5)
        # the next epoch built ahead (see start()); guarded by _spec_lock with _next
        self._spec: Optional[_Speculation] = None
        self._next: Optional[Tuple[Any, Sequence[BatchPlan]]] = None
        self._spec_lock = threading.Lock()

    def _data_array(self, batch: int) -> np.ndarray:
        """A batch data array from the pool (reused when nobody references it any more)."""
        return self._arrays.get((batch,) + self._shape, self._dtype)

    def _run(self, items: List[Tuple[bytes, int, int]], buf: "BatchBuffers") -> None:
        """One pool task: consecutive slots of one batch, in order (first error stops it)."""
        process = self._process
        for payload, rid, slot in items:
            process(payload, rid, slot, buf)

    # -- epoch control ---------------------------------------------------------------------
    def start(self, plans: Sequence[BatchPlan], key: Any = None,
              next_plans: Optional[Tuple[Any, Sequence[BatchPlan]]] = None) -> None:
        """Begin producing the batches of ``plans`` (stops any epoch in progress).

        ``key`` names ``plans`` (ImageRecordIter: ``(epoch, consumed)``); ``next_plans`` is
        ``(key, plans)`` of the epoch expected next.  Once every batch of ``plans`` is
        submitted, the first batch of ``next_plans`` is built ahead, so the threads keep
        working across the epoch boundary (``reset()``); a later ``start`` with that key
        takes it over instead of restarting.  Any other ``start`` discards it.
        """
        if self._closed:
            raise PipelineClosed("the iterator is closed")
        with self._spec_lock:
            spec, old = self._spec, self._queue
            # the very batches asked for (a producer that already exited left its queue
            # complete: still adoptable)
            adopt = (key is not None and spec is not None and spec.key == key
                     and _same_plans(spec.plans, plans))
            if adopt:
                self._queue, self._spec, self._next = spec.queue, None, next_plans
                spec.adopted.set()
        if adopt:
            _drain(old)  # what is left of the previous epoch: dropped, as stop() does
            return
        self.stop()
        self._stop = threading.Event()
        self._next = next_plans
        self._queue = queue.Queue(maxsize=self._prefetch)
        self._producer = threading.Thread(target=self._produce,
                                          args=(_epoch_plans(plans), self._queue, self._stop),
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
        """Epoch after epoch: ``plans`` into ``q``; with ``next_plans``, the next epoch's first
        batch is built before this epoch's end is queued, the rest once :meth:`start` adopts
        it (its batches go to their own queue)."""
        gate: Optional[threading.Event] = None
        end_prev: Optional[Callable[[], bool]] = None
        while True:
            if not self._produce_epoch(plans, q, stop, gate, end_prev):
                return
            while gate is not None and not gate.wait(0.1):  # a short epoch built ahead in
                if stop.is_set():                             # full: wait for its adoption
                    return
            with self._spec_lock:
                nxt, self._next = self._next, None
                spec = None
                if nxt is not None and not stop.is_set():
                    spec = self._spec = _Speculation(nxt[0], _epoch_plans(nxt[1]),
                                                     queue.Queue(maxsize=self._prefetch))
            if spec is None:
                self._put(q, _END, stop)
                return
            end_prev = (lambda q=q: self._put(q, _END, stop))
            plans, q, gate = spec.plans, spec.queue, spec.adopted

    def _produce_epoch(self, plans: List[BatchPlan], q: queue.Queue, stop: threading.Event,
                       gate: Optional[threading.Event] = None,
                       end_prev: Optional[Callable[[], bool]] = None) -> bool:
        """Submit and queue ``plans``' batches; False when stopped or failed (the error queued).

        Built ahead (``gate`` given): after the first batch, ``end_prev()`` queues the end of
        the previous epoch, then the producer waits for ``gate`` (adoption) or the stop."""
        pending = [end_prev] if end_prev is not None else []

        def close_prev() -> bool:
            return pending.pop()() if pending else True
        stream = None
        try:
            wanted = [p.ids[p.ids >= 0] for p in plans]
            all_ids = np.concatenate(wanted) if wanted else np.zeros(0, np.int64)
            hints = getattr(plans, "fetch_hints", None)
            stream = self._fetch(all_ids, **hints) if hints else self._fetch(all_ids)
            submit, run = self._pool.submit, self._run
            for b, plan in enumerate(plans):
                ready: Optional[List[Tuple[int, int, Any]]] = None
                if b == 1 and gate is not None:
                    # the second batch's records are read before waiting for adoption, so
                    # its tasks are queued the moment start() adopts this epoch (the pool
                    # otherwise idles through those reads at every reset())
                    ready = read_slots(plan, stream, stop)
                    if ready is None or not close_prev():
                        return False
                    while not gate.wait(0.1):
                        if stop.is_set():
                            return False
                if stop.is_set():
                    return False
                n = plan.ids.shape[0]
                buf = BatchBuffers(plan, self._shape, self._dtype, self._lw,
                                   self._data_array(n), self._label_dtype)
                k = chunk_size(n, self._threads)
                items: List[Tuple[bytes, int, int]] = []
                slots = ready if ready is not None else stream_slots(plan, stream)
                for slot, rid, payload in slots:
                    if stop.is_set():
                        return False
                    if rid < 0:
                        buf.data[slot] = 0
                        continue
                    items.append((payload, rid, slot))
                    if len(items) == k:
                        buf.add(submit(run, items, buf))
                        items = []
                        yield_gil()
                if items:
                    buf.add(submit(run, items, buf))
                buf.seal()
                if not self._put(q, buf, stop):
                    return False
            return close_prev()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            if close_prev():
                self._put(q, exc, stop)
            return False
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
        item.done.wait()  # one wake-up per batch (its tasks' callbacks set it, cancelled too)
        try:
            for f in item.futures:  # all finished: raises the first failed slot run's error
                f.result()
        except BaseException:
            self._queue = None
            self.stop()
            raise
        item.futures = []
        return item

    def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Wait until the pool has run the tasks of every batch queued so far, the next
        epoch's first batch built ahead included (for benchmarks that time one pipeline at a
        time: that work then counts for the pipeline that did it, not the next one timed)."""
        with self._spec_lock:
            qs = [self._queue, self._spec.queue if self._spec is not None else None]
        futures: List[Future] = []
        for q in qs:
            if q is not None:
                with q.mutex:
                    items = list(q.queue)
                for b in items:
                    if isinstance(b, BatchBuffers):
                        futures += b.futures
        wait(futures, timeout)

    def stop(self) -> None:
        """Stop the current epoch's producer and drop its queued batches (and any built ahead
        for the next epoch)."""
        self._stop.set()
        with self._spec_lock:
            spec, self._spec, self._next = self._spec, None, None
        if self._producer is not None:
            q = self._queue
            while self._producer.is_alive():
                _drain(q)
                if spec is not None:
                    _drain(spec.queue)
                self._producer.join(timeout=0.05)
            self._producer = None
            if q is not None:  # wake a consumer blocked in next() on this queue
                try:
                    q.put_nowait(_END)
                except queue.Full:
                    pass
        if spec is not None:
            _drain(spec.queue)
        self._queue = None

    def close(self) -> None:
        """Stop producing, cancel queued work, join every thread, release buffers."""
        if self._closed:
            return
        self.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._arrays.clear()
        self._closed = True
