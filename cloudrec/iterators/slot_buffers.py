"""ImageIter's batch arrays: reused once nobody refers to them, and the destination slots
predicted for the samples in flight (a mixin of :class:`SampleStream`; see its docstring).

A batch handed out goes to a short list of spares and is written again only once nothing
outside the iterator refers to it (its reference count), so a batch (or a view, or a
tensor made from it) that the user keeps is never overwritten.  Memory: up to ``_AHEAD``
arrays being filled plus ``_SPARES`` spares.
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np

__all__ = ["SlotBuffers"]

_SPARES = 4  # handed-out batch arrays kept for reuse (once the user has let go of them)
_AHEAD = 3  # batch arrays that predicted destination slots may span
_REFCOUNT = hasattr(sys, "getrefcount")  # without it (not CPython) nothing is reused


def _is_slot(data: np.ndarray, batch: np.ndarray, i: int) -> bool:
    """True when ``data`` is the array ``batch[i]`` itself (a worker wrote it in place)."""
    return data.base is batch and data.ctypes.data == batch.ctypes.data + i * batch.strides[0]


class SlotBuffers:
    """Batch arrays and predicted slots (uses the iterator's ``batch_size``, ``data_shape``,
    ``_spares``, ``_dests``, ``_fill_k`` and ``_pred_next``)."""

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
