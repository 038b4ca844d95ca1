"""``PrefetchingIter`` (background threads over other iterators) and ``ResizeIter`` (fixed epoch
length), with MXNet's names and behaviour (spec §3.4).

Unlike MXNet's, an exception inside an inner iterator is re-raised in the
consumer instead of killing its thread and hanging the next call.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence

from cloudrec.io.base import DataBatch, DataDesc, DataIter

__all__ = ["PrefetchingIter", "ResizeIter"]


class _CurrentBatchIter(DataIter):
    """An iterator whose ``getdata``/``getlabel``/``getindex``/``getpad`` read ``current_batch``."""

    current_batch: DataBatch

    def getdata(self):
        return self.current_batch.data

    def getlabel(self):
        return self.current_batch.label

    def getindex(self):
        return self.current_batch.index

    def getpad(self):
        return self.current_batch.pad


class ResizeIter(_CurrentBatchIter):
    """Exactly ``size`` batches per epoch from ``data_iter``, resetting it when it runs out."""

    def __init__(self, data_iter: DataIter, size: int, reset_internal: bool = True) -> None:
        super().__init__()
        self.data_iter = data_iter
        self.size = size
        self.reset_internal = reset_internal
        self.cur = 0
        self.current_batch: Optional[DataBatch] = None
        self.provide_data = data_iter.provide_data
        self.provide_label = data_iter.provide_label
        self.batch_size = data_iter.batch_size
        if hasattr(data_iter, "default_bucket_key"):
            self.default_bucket_key = data_iter.default_bucket_key

    def reset(self) -> None:
        self.cur = 0
        if self.reset_internal:
            self.data_iter.reset()

    def iter_next(self) -> bool:
        if self.cur == self.size:
            return False
        try:
            self.current_batch = self.data_iter.next()
        except StopIteration:
            self.data_iter.reset()
            self.current_batch = self.data_iter.next()
        self.cur += 1
        return True



class PrefetchingIter(_CurrentBatchIter):
    """Run each inner iterator one batch ahead in its own thread; join their data and labels.

    ``rename_data``/``rename_label``: one ``{old: new}`` dict per inner iterator.
    """

    def __init__(self, iters: Any, rename_data: Optional[Sequence[Dict[str, str]]] = None,
                 rename_label: Optional[Sequence[Dict[str, str]]] = None) -> None:
        super().__init__()
        if not isinstance(iters, list):
            iters = [iters]
        self.n_iter = len(iters)
        assert self.n_iter > 0
        self.iters = iters
        self.rename_data = rename_data
        self.rename_label = rename_label
        self.batch_size = self.provide_data[0][1][0]
        self.data_ready = [threading.Event() for _ in range(self.n_iter)]
        self.data_taken = [threading.Event() for _ in range(self.n_iter)]
        for e in self.data_taken:
            e.set()
        self.started = True
        self.current_batch: Optional[DataBatch] = None
        self.next_batch: List[Any] = [None] * self.n_iter
        self._errors: List[Optional[BaseException]] = [None] * self.n_iter
        self.prefetch_threads = [threading.Thread(target=self._prefetch, args=(i,), daemon=True,
                                                  name=f"cloudrec-prefetch-{i}")
                                 for i in range(self.n_iter)]
        for t in self.prefetch_threads:
            t.start()

    def _prefetch(self, i: int) -> None:
        while True:
            self.data_taken[i].wait()
            if not self.started:
                break
            try:
                self.next_batch[i] = self.iters[i].next()
            except StopIteration:
                self.next_batch[i] = None
            except BaseException as e:  # hand it to the consumer
                self.next_batch[i] = None
                self._errors[i] = e
            self.data_taken[i].clear()
            self.data_ready[i].set()

    def close(self) -> None:
        """Stop the prefetch threads."""
        if not self.started:
            return
        self.started = False
        for e in self.data_taken:
            e.set()
        for t in self.prefetch_threads:
            t.join()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _renamed(self, attr: str, renames) -> List[DataDesc]:
        if renames is None:
            return sum([list(getattr(i, attr)) for i in self.iters], [])
        out: List[DataDesc] = []
        for r, it in zip(renames, self.iters):
            for x in getattr(it, attr):
                if isinstance(x, DataDesc):
                    out.append(DataDesc(r.get(x.name, x.name), x.shape, x.dtype, x.layout))
                else:
                    out.append(DataDesc(r.get(x[0], x[0]), x[1]))
        return out

    @property
    def provide_data(self) -> List[DataDesc]:
        return self._renamed("provide_data", self.rename_data)

    @property
    def provide_label(self) -> List[DataDesc]:
        return self._renamed("provide_label", self.rename_label)

    def reset(self) -> None:
        for e in self.data_ready:
            e.wait()
        for it in self.iters:
            it.reset()
        for e in self.data_ready:
            e.clear()
        self._errors = [None] * self.n_iter
        for e in self.data_taken:
            e.set()

    def _raise_pending(self) -> None:
        for i, err in enumerate(self._errors):
            if err is not None:
                self._errors[i] = None
                for e in self.data_ready:
                    e.clear()
                for e in self.data_taken:
                    e.set()
                raise err

    def iter_next(self) -> bool:
        for e in self.data_ready:
            e.wait()
        self._raise_pending()
        if self.next_batch[0] is None:
            for b in self.next_batch:
                assert b is None, "Number of entry mismatches between iterators"
            return False
        for b in self.next_batch:
            assert b is not None and b.pad == self.next_batch[0].pad, \
                "Number of entry mismatches between iterators"
        self.current_batch = DataBatch(sum([list(b.data) for b in self.next_batch], []),
                                       sum([list(b.label or []) for b in self.next_batch], []),
                                       self.next_batch[0].pad, self.next_batch[0].index,
                                       provide_data=self.provide_data,
                                       provide_label=self.provide_label)
        for e in self.data_ready:
            e.clear()
        for e in self.data_taken:
            e.set()
        return True

    def next(self) -> DataBatch:
        if self.iter_next():
            return self.current_batch
        raise StopIteration

