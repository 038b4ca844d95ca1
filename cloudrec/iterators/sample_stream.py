"""ImageIter's sample stream: a lookahead of samples decoded and augmented on a thread pool.

The pool runs a couple of batches ahead; each sample gets its own Generator
seeded from (seed, epoch, wrap, position), so batches never depend on thread
timing.  ``SampleStream`` is a mixin of :class:`cloudrec.iterators.ImageIter`:
it reads the iterator's order, reader and hooks (``process_sample``,
``write_sample``, ``next_sample``) and fills batch slots.

Batch arrays are reused: a batch handed out goes to a short list of spares and is
written again only once nothing outside the iterator refers to it (its reference
count), so a batch (or a view, or a tensor made from it) that the user keeps is never
overwritten.  Memory: up to ``_AHEAD`` arrays being filled plus ``_SPARES`` spares.
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
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait_all
from typing import Any, Callable, Optional, Tuple

import numpy as np

from cloudrec.errors import ImageDecodeError, ImageTooLargeError, LabelError
from cloudrec.iterators.image_sources import unpack_header_named

__all__ = ["SampleStream", "BrokenImageError", "BrokenImageTooLargeError"]

log = logging.getLogger("cloudrec.iterators.image_iter")
_END = object()  # end-of-epoch marker in the lookahead queue
_SPARES = 4  # handed-out batch arrays kept for reuse (once the user has let go of them)
_AHEAD = 3  # batch arrays that predicted destination slots may span
_REFCOUNT = hasattr(sys, "getrefcount")  # without it (not CPython) nothing is reused


def _is_slot(data: np.ndarray, batch: np.ndarray, i: int) -> bool:
    """True when ``data`` is the array ``batch[i]`` itself (a worker wrote it in place)."""
    return data.base is batch and data.ctypes.data == batch.ctypes.data + i * batch.strides[0]


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


class SampleStream:
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
        rng = np.random.Generator(np.random.PCG64(list(rng_key)))  # built here, off the main thread
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

    # ------------------------------------------------------------------------------ buffers
    def _obtain_buffer(self) -> np.ndarray:
        """A batch array: a spare nobody else refers to any more, else a new zeroed one
        (its pages are first touched by the workers writing into it, in parallel)."""
        spare = self._spares
        for k in range(len(spare)):
            if _REFCOUNT and sys.getrefcount(spare[k]) <= 2:  # the list's reference + the call's
                return spare.pop(k)
        return np.zeros((self.batch_size,) + tuple(self.data_shape), dtype=np.float32)

    def _new_batch_buffer(self) -> np.ndarray:
        """The array of the batch about to be filled (batch ``_fill_k`` of the predictions:
        the one its predicted slots point into).  Every slot gets overwritten or zeroed."""
        buf = self._dests.get(self._fill_k)
        if buf is None:
            buf = self._dests[self._fill_k] = self._obtain_buffer()
        return buf

    def _end_batch(self, reuse: bool) -> None:
        """The batch being filled is done: handed out or dropped (``reuse``: a spare,
        written again only once nothing else refers to it), or kept (a roll-over)."""
        buf = self._dests.pop(self._fill_k, None)
        self._fill_k += 1
        if reuse and buf is not None:
            self._spare(buf)

    def _spare(self, buf: np.ndarray) -> None:
        if not any(x is buf for x in self._spares):
            self._spares.append(buf)
            del self._spares[:-_SPARES]

    def _align(self, batch_data: np.ndarray, start: int) -> None:
        """With nothing in flight, predict the next submissions into ``batch_data`` from slot
        ``start`` on (a new epoch, a roll-over batch completed, a padded batch refilled)."""
        k = self._fill_k
        for kk, buf in list(self._dests.items()):
            if buf is not batch_data:
                self._spare(buf)
        self._dests = {k: batch_data}
        self._pred_next = k * self.batch_size + start

    @staticmethod
    def _zero_tail(batch_data: np.ndarray, filled: int) -> None:
        """Zero the slots no sample reached (a reused array holds an older batch there)."""
        if filled < batch_data.shape[0]:
            batch_data[filled:] = 0

    def _predict(self) -> Optional[list]:
        """``[batch array, slot]`` the next submitted sample lands in if no sample before
        it is dropped (a list: dropping the sample empties it, releasing the array)."""
        j = self._pred_next
        self._pred_next += 1  # every submission takes an index, so no slot is predicted twice
        k, slot = divmod(j, self.batch_size)
        if not self._fill_k <= k < self._fill_k + _AHEAD:
            return None
        buf = self._dests.get(k)
        if buf is None:
            buf = self._dests[k] = self._obtain_buffer()
        return [buf, slot]

    def _new_epoch(self) -> None:
        self._epoch += 1
        self._wrap = 0
        self._extra = 0

    def _rng_key(self, item: _Item) -> Tuple[int, ...]:
        """Seed of the sample's own Generator: (seed, epoch, wrap, position) only, so
        batches do not depend on thread count, lookahead or timing."""
        pos = item.pos
        if pos < 0:
            pos = (1 << 40) + self._extra
            self._extra += 1
        return (self.seed, self._epoch, self._wrap, pos)

    def _fill(self) -> None:
        pool = self._ensure_pool()
        while len(self._pending) < self._lookahead:
            if self._pending and self._pending[-1] is _END:
                return
            try:
                if self._custom_next_sample:
                    label, s = self.next_sample()
                    item = _Item(label, s, where=f"index: {self.cur}")
                else:
                    item = self._next_item()
            except StopIteration:
                self._pending.append(_END)
                return
            dest = self._predict() if self._chain is not None else None
            fut = pool.submit(self._run, item, self._rng_key(item), dest)
            fut.dest = dest
            self._pending.append(fut)

    def _take(self):
        if not self._pending:
            self._fill()
        x = self._pending.popleft()
        if x is _END:
            raise StopIteration
        if len(self._pending) < self._lookahead // 2:
            self._fill()
        return x.result()

    def _drop_pending(self) -> None:
        running = []
        while self._pending:
            x = self._pending.popleft()
            if isinstance(x, Future):
                if not x.cancel():
                    running.append(x)
                elif x.dest:  # its queued call holds the array: let go of it now
                    x.dest.clear()
        if running:  # they write into predicted slots: let them finish before any reuse
            _wait_all(running)
        for buf in self._dests.values():  # never handed out: spares again
            self._spare(buf)
        self._dests, self._fill_k, self._pred_next = {}, 0, 0
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _batchify(self, batch_data: np.ndarray, batch_label: np.ndarray, start: int = 0) -> int:
        """Fill slots ``start..`` from the sample stream; return the number of filled slots."""
        i = start
        if self._chain is not None and not self._pending:
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
            if self._stream is None or self._stream_pos != cur:
                if self._stream is not None:
                    self._stream.close()
                self._stream = self.fetcher.fetch(iter(self._order[cur:].tolist()))
                self._stream_pos = cur
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
