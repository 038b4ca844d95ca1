"""What BatchPipeline's producer leans on: reused batch arrays, the images per pool task,
a plan's record slots read from the fetcher's stream, and handing the GIL to a worker."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

__all__ = ["BatchArrayPool", "chunk_size", "yield_gil", "stream_slots", "read_slots",
           "GIL_YIELD_S"]


def chunk_size(batch: int, threads: int) -> int:
    """Images per pool task: about four runs per thread and batch (load balance at the end of
    a batch), at most 16 (the first batch's latency), at least 1."""
    return max(1, min(16, batch // max(1, 4 * threads)))


def _gil_yield_s(default: float = 5e-5) -> float:
    """``$CLOUDREC_GIL_YIELD_S`` in seconds; a value that is not a number >= 0 warns and
    keeps the default (the package must still import)."""
    text = os.environ.get("CLOUDREC_GIL_YIELD_S")
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        import warnings
        warnings.warn(f"CLOUDREC_GIL_YIELD_S={text!r} is not a number of seconds >= 0; "
                      f"using {default}", RuntimeWarning, stacklevel=2)
        return default
    return value


#: how long the producer sleeps after queueing a task (see :func:`yield_gil`)
GIL_YIELD_S = _gil_yield_s()


def yield_gil() -> None:
    """Let a decode thread take the GIL.  A thread waiting for it only asks the holder to
    drop it after the 5 ms switch interval, and the producer reading records holds it for
    a batch's worth of Python (~1 ms): a worker just woken by a task, or back from a native
    call, would wait that long.  ``sleep(0)`` hands nothing over (the producer takes the
    GIL back before the waiter wakes); a short sleep lets the waiter run."""
    if GIL_YIELD_S > 0:
        time.sleep(GIL_YIELD_S)


def stream_slots(plan: Any, stream: Iterator[Tuple[int, bytes]]
                  ) -> Iterator[Tuple[int, int, Any]]:
    """(slot, record id, payload) of ``plan`` in slot order, payloads taken from ``stream``
    (None for a pad slot, id -1)."""
    for slot, rid in enumerate(plan.ids.tolist()):
        if rid < 0:
            yield slot, rid, None
            continue
        got, payload = next(stream)
        if got != rid:  # the fetcher promises request order
            raise RuntimeError(f"fetcher returned record {got}, expected {rid}")
        yield slot, rid, payload


def read_slots(plan: Any, stream: Iterator[Tuple[int, bytes]],
                stop: threading.Event) -> Optional[List[Tuple[int, int, Any]]]:
    """:func:`stream_slots` read in full now (None when stopped meanwhile)."""
    out = []
    for item in stream_slots(plan, stream):
        if stop.is_set():
            return None
        out.append(item)
    return out


class BatchArrayPool:
    """Batch data arrays, reused once nobody but the pool references them.

    A fresh multi-MB array costs a page fault per page on first write (on a VM
    each also faults on the host): at 38 MB per float32 batch of 64 that is
    ~10 % of an image's decode.  The pool keeps up to ``keep`` arrays; an array
    is free when its only references are the pool's, so a batch (or any view or
    tensor made from it) that the caller still holds is never overwritten.
    """

    def __init__(self, keep: int) -> None:
        self.keep = int(keep)
        self._arrays: List[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A free array of ``shape``/``dtype`` (contents stale: every slot is rewritten) or a
        new one, remembered while fewer than ``keep`` are."""
        with self._lock:
            for a in self._arrays:
                # references: the list, ``a`` and getrefcount's argument
                if sys.getrefcount(a) == 3 and a.shape == shape and a.dtype == dtype:
                    return a
            a = np.empty(shape, dtype)
            if len(self._arrays) < self.keep:
                self._arrays.append(a)
            else:  # shape changes or callers holding many batches: forget the oldest free one
                old = None
                for i, old in enumerate(self._arrays):
                    if sys.getrefcount(old) == 3:
                        self._arrays[i] = a
                        break
                del old
            return a

    def clear(self) -> None:
        with self._lock:
            self._arrays.clear()
