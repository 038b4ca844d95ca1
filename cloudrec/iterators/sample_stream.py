"""ImageIter's sample stream: a lookahead of samples decoded and augmented on a thread pool.

The pool runs a couple of batches ahead; each sample gets its own Generator
keyed by (seed, epoch, wrap, record id), so batches never depend on thread
timing or on where an epoch was resumed.  ``SampleStream`` is a mixin of
:class:`cloudrec.iterators.ImageIter`: it reads the iterator's order, reader and hooks (``process_sample``,
``write_sample``, ``next_sample``) and fills batch slots.

Batch arrays are reused once nothing outside the iterator refers to them
(:mod:`cloudrec.iterators.slot_buffers`).  Samples go to the pool in runs of
consecutive positions (one task per run: fewer futures, wake-ups and GIL hand-offs),
and the lookahead is topped up a run at a time.
With a recognised augmenter chain (``FusedChain``) each sample is predicted a
destination slot when it is submitted (the next slot, as if no sample were dropped)
and the worker writes its CHW float32 result straight there; the main thread copies
only when the prediction missed (after a dropped sample), so the batches are the same
either way.  Predicted slots never collide: each submission takes the next index, and
within an array a sample lands at or before its predicted slot, so a copy never goes
where a still-running worker will write.
"""
from __future__ import annotations

import logging
import posixpath
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait_all
from typing import Any, Callable, Optional, Tuple

import numpy as np

from cloudrec.errors import ImageDecodeError, ImageTooLargeError, LabelError
from cloudrec.iterators.image_sources import unpack_header_named
from cloudrec.iterators.sample_rng import keyed_generator
from cloudrec.iterators.slot_buffers import SlotBuffers, _is_slot
from cloudrec.pipeline.batch_parts import yield_gil

__all__ = ["SampleStream", "BrokenImageError", "BrokenImageTooLargeError"]

log = logging.getLogger("cloudrec.iterators.image_iter")
_END = object()  # end-of-epoch marker in the lookahead queue


class BrokenImageError(ImageDecodeError, RuntimeError):
    """A sample's image could not be decoded; a RuntimeError like MXNet's ("Broken image ...")."""


class BrokenImageTooLargeError(BrokenImageError, ImageTooLargeError):
    """A sample's image header claims more pixels than ``max_pixels`` (a decompression bomb)."""


class _Item:
    """One sample on its way to a worker: label, bytes (or a loader), and where it came from."""

    __slots__ = ("label", "payload", "loader", "where", "key", "pos", "rid")

    def __init__(self, label: Any, payload: Any = None, loader: Optional[Callable[[], bytes]] = None,
                 where: str = "", key: Any = None, pos: int = -1, rid: int = -1) -> None:
        self.label, self.payload, self.loader, self.where, self.key = (
            label, payload, loader, where, key)
        self.pos = pos  # position in the epoch's sample stream (seeds its Generator)
        self.rid = rid  # record id (row of the record table or of the image list), -1 unknown


class _Failed:
    """A sample's exception, kept in its place in a run's results."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Resources:
    """What a dropped ImageIter must release: its pools and its reader (see ``weakref.finalize``)."""

    def __init__(self) -> None:
        self.pool: Optional[ThreadPoolExecutor] = None
        self.reader: Any = None

    def release(self, wait: bool = True) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=wait, cancel_futures=True)
            self.pool = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None


# ------------------------------------------------------------------------------------ iterator


class SampleStream(SlotBuffers):
    """The lookahead pipeline and the readers behind ImageIter (a mixin; see module doc)."""

    # ------------------------------------------------------------------------------ pipeline
    def _is_valid_image(self, data: np.ndarray) -> bool:
        """``check_valid_image`` as a yes/no; a rejected image is logged (MXNet skips it)."""
        try:
            self.check_valid_image(data)
        except RuntimeError as e:
            log.debug("Invalid image, skipping: %s", e)
            return False
        return True

    def process_sample(self, label: Any, s: Any) -> Optional[Tuple[np.ndarray, Any]]:
        """One worker's job: decode, check, augment, to CHW.  None drops the sample."""
        data = self.imdecode(s)
        if not self._is_valid_image(data):
            return None
        data = self.augmentation_transform(data)
        return self.postprocess_data(data), label

    def _process_fused(self, label: Any, s: Any, dest: Optional[list],
                       rng: np.random.Generator) -> Optional[Tuple[np.ndarray, Any]]:
        """``process_sample`` through the fused chain, into the predicted slot ``dest``
        (or a fresh array); the augmenters one by one when the chain does not apply."""
        data = self.imdecode(s)
        if not self._is_valid_image(data):
            return None
        chain = self._chain
        out = dest[0][dest[1]] if dest else np.empty(chain.out_shape, np.float32)
        if chain.run(data, rng, out):
            return out, label
        return self.postprocess_data(self.augmentation_transform(data)), label

    @staticmethod
    def _check_sample_shape(batch_data: np.ndarray, data: np.ndarray, where: str) -> None:
        """ValueError unless the augmented sample has the batch's per-sample shape."""
        if data.shape != batch_data.shape[1:]:
            raise ValueError(f"sample {where} has shape {data.shape} after augmentation, "
                             f"the batch needs {batch_data.shape[1:]}")

    def write_sample(self, batch_data: np.ndarray, batch_label: np.ndarray, i: int,
                     data: np.ndarray, label: Any, where: str = "") -> None:
        """Put one processed sample into slot ``i``; a label of the wrong width is an error."""
        self._check_sample_shape(batch_data, data, where)
        if not _is_slot(data, batch_data, i):  # else a worker wrote it in place
            batch_data[i] = data
        lab = np.asarray(label)
        if lab.size != (1 if batch_label.ndim == 1 else batch_label.shape[1]):
            raise LabelError(f"sample {where} has {lab.size} label(s) but label_width is "
                             f"{self.label_width}")
        batch_label[i] = lab.reshape(batch_label.shape[1:])

    def _run(self, item: _Item, rng_key: Tuple[int, ...], dest: Optional[list] = None):
        loc = self._local
        rng = keyed_generator(rng_key)  # this thread's Generator, re-keyed for the sample
        loc.rng, loc.where, loc.key = rng, item.where, item.key
        try:
            s = self._payload(item)
            try:
                if self._chain is None:
                    res = self.process_sample(item.label, s)
                else:
                    res = self._process_fused(item.label, s, dest, rng)
            except BrokenImageError as e:
                if self.on_error == "skip":
                    return ("skip", str(e), item.pos, item.rid)
                raise
            return ("ok", res, item.where, item.pos, item.rid)
        finally:
            loc.rng = None

    def _payload(self, item: _Item):
        return item.loader() if item.loader is not None else item.payload

    def _ensure_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="cloudrec-imageiter")
            self._res.pool = self._pool
        return self._pool

    def _new_epoch(self) -> None:
        self._epoch += 1
        self._wrap = 0
        self._extra = 0

    def _rng_key(self, item: _Item) -> Tuple[int, ...]:
        """Seed of the sample's own Generator: (seed, epoch, wrap, record id), as
        ImageRecordIter's, so batches depend on neither thread count, lookahead nor timing,
        and a resumed epoch augments each record as the uninterrupted one does (its stream
        restarts at the resume point, so a stream position would draw differently)."""
        rid = item.rid
        if rid < 0:  # an overriding next_sample: no record id known
            rid = (1 << 40) + self._extra
            self._extra += 1
        return (self.seed, self._epoch, self._wrap, rid)

    def _run_many(self, run: list) -> list:
        """One pool task: the samples of a run in order; a sample's exception is kept in its
        place (raised when the main thread reaches it) and the rest of the run still runs."""
        out = []
        for item, key, dest in run:
            try:
                out.append(self._run(item, key, dest))
            except Exception as e:  # noqa: BLE001 - re-raised in the main thread, in order
                out.append(_Failed(e))
        return out

    def _fill(self) -> None:
        """Read and submit samples until ``_lookahead`` are queued, in runs of ``_run_len``
        consecutive samples per pool task (fewer futures, wake-ups and GIL hand-offs)."""
        pool = self._ensure_pool()
        run: list = []
        while self._queued + len(run) < self._lookahead:
            if self._pending and self._pending[-1] is _END:
                break
            if self._budget is not None and self._budget <= 0 and (self._pending or run):
                break  # the padding's samples are submitted (more only once they ran out)
            try:
                if self._custom_next_sample:
                    label, s = self.next_sample()
                    item = _Item(label, s, where=f"index: {self.cur}")
                else:
                    item = self._next_item()
            except StopIteration:
                self._submit(pool, run)
                run = []
                self._pending.append(_END)
                self._open_next_epoch()  # its first records read while the workers finish
                break
            dest = self._predict() if self._chain is not None else None
            run.append((item, self._rng_key(item), dest))
            if self._budget is not None:
                self._budget -= 1
            if len(run) >= self._run_len:
                self._submit(pool, run)
                run = []
        self._submit(pool, run)

    def _submit(self, pool: ThreadPoolExecutor, run: list) -> None:
        if run:
            fut = pool.submit(self._run_many, run)
            fut.dests = [r[2] for r in run if r[2]]
            fut.size = len(run)
            self._queued += len(run)
            self._pending.append(fut)
            yield_gil()  # the woken worker takes the GIL now, not after 5 ms of reading

    def _take(self):
        ready = self._ready
        if not ready:
            if not self._pending:
                self._fill()
            x = self._pending.popleft()
            if x is _END:
                raise StopIteration
            self._queued -= x.size
            if self._queued <= self._lookahead - self._refill:
                self._fill()
            ready.extend(x.result())
        res = ready.popleft()
        if type(res) is _Failed:
            raise res.exc
        return res

    def _drop_pending(self) -> None:
        running = []
        while self._pending:
            x = self._pending.popleft()
            if isinstance(x, Future):
                if not x.cancel():
                    running.append(x)
                else:  # its queued call holds the arrays: let go of them now
                    for dest in x.dests:
                        dest.clear()
        if running:  # they write into predicted slots: let them finish before any reuse
            _wait_all(running)
        self._ready.clear()
        self._queued = 0
        for buf in self._dests.values():  # never handed out: spares again
            self._spare(buf)
        self._dests, self._fill_k, self._pred_next = {}, 0, 0
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _batchify(self, batch_data: np.ndarray, batch_label: np.ndarray, start: int = 0) -> int:
        """Fill slots ``start..`` from the sample stream; return the number of filled slots."""
        i = start
        if self._chain is not None and not self._pending and not self._ready:
            self._align(batch_data, start)
        try:
            while i < self.batch_size:
                res = self._take()
                if len(res) > 3 and res[-2] >= 0:
                    self._delivered = res[-2] + 1
                if res[0] == "skip":
                    self.num_skipped += 1
                    if len(self.skipped) < 1000:
                        self.skipped.append(res[1])
                    log.warning("skipping a broken image: %s", res[1])
                    continue
                if res[1] is None:
                    continue
                data, label = res[1]
                self.write_sample(batch_data, batch_label, i, data, label, res[2])
                self._slot_ids.append(int(res[-1]) if len(res) > 3 else -1)
                self._slot_pos.append(int(res[-2]) if len(res) > 3 else -1)
                i += 1
        except StopIteration:
            if not i:
                raise StopIteration
        return i

    # ------------------------------------------------------------------------------ reading
    def _next_item(self) -> _Item:
        """The next sample to process (reads record bytes; image files are read by a worker)."""
        if self._allow_read is False:
            raise StopIteration
        if self._order is not None:
            if self.cur < self.num_image:
                pos = int(self._order[self.cur])
            else:
                if self.last_batch_handle != "discard":
                    self.cur = 0
                    self._wrap += 1
                raise StopIteration
            cur = self.cur
            self.cur += 1
            if self.imgrec is not None:
                return self._record_item(cur, pos)
            return self._list_item(pos, cur)
        s = self.imgrec.read()
        if s is None:
            if self.last_batch_handle != "discard":
                self.imgrec.reset()
                self._seq_no = 0
                self._wrap += 1
            raise StopIteration
        n = self._seq_no
        self._seq_no += 1
        where = f"index: {n} (record #{n} of {self.path_imgrec}, sequential read)"
        header, start = unpack_header_named(s, where)
        return _Item(header.label, memoryview(s)[start:], where=where, key=n, pos=n, rid=n)

    def _record_item(self, cur: int, rid: int) -> _Item:
        """Sample ``cur`` of the epoch's stream (record ``rid``); cur < 0 reads it alone."""
        if cur < 0:
            payload = self.fetcher.get(rid)
        else:
            if self._stream is None or self._stream_pos != cur or cur >= self._stream_end:
                if self._stream is not None:
                    self._stream.close()
                # padding the last batch reads only what it needs, not a whole epoch's plan
                end = len(self._order) if self._budget is None else min(
                    len(self._order), cur + max(self._budget, 1) + self._run_len)
                self._stream = self.fetcher.fetch(iter(self._order[cur:end].tolist()))
                self._stream_pos, self._stream_end = cur, end
            got, payload = next(self._stream)
            self._stream_pos += 1
            assert got == rid
        key = self.imgidx[rid]
        where = (f"index: {key} ({self.dataset.record_url(rid)}, key {key!r}, "
                 f"offset {int(self.dataset.table.offset[rid])})")
        header, start = unpack_header_named(payload, where)
        if self.imglist is None:
            label = header.label
        else:
            try:
                label = self.imglist[key][0]
            except KeyError:
                raise LabelError(f"record key {key!r} of {self.path_imgrec} is not in the "
                                 f"image list {self._list_url}") from None
        return _Item(label, memoryview(payload)[start:], where=where, key=key, pos=cur, rid=rid)

    def _list_item(self, rid: int, cur: int) -> _Item:
        key, label, fname = self._list_entries[rid]
        return _Item(label, loader=lambda f=fname: self.read_image(f),
                     where=f"filename: {self._join_root(fname)}", key=key, pos=cur, rid=rid)

    def _join_root(self, fname: str) -> str:
        if "://" in fname or self.path_root is None:
            return fname
        return self.path_root.rstrip("/") + "/" + fname

    def _file_location(self, fname: str):
        from cloudrec.storage.fs import resolve
        if "://" in fname or self.path_root is None:
            return resolve(fname, self.storage_options)
        if self._root_fs is None:
            self._root_fs = resolve(self.path_root, self.storage_options)
        fs, base = self._root_fs
        return fs, posixpath.join(base, fname) if base else fname
