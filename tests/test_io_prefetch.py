"""PrefetchingIter and ResizeIter: MXNet's semantics, plus errors that reach the consumer."""
import numpy as np
import pytest

from cloudrec.io import DataBatch, DataIter, NDArrayIter, PrefetchingIter, ResizeIter


def test_resize_iter_fixed_length_wraps_inner():
    inner = NDArrayIter(np.arange(10, dtype=np.float32), batch_size=4, last_batch_handle="discard")
    it = ResizeIter(inner, 5)
    firsts = [b.data[0][0] for b in it]
    assert firsts == [0, 4, 0, 4, 0]  # inner has 2 batches; reset when exhausted
    it.reset()
    assert len(list(it)) == 5 and it.batch_size == 4
    assert it.provide_data == inner.provide_data


def test_prefetching_joins_iterators_and_renames():
    a = NDArrayIter(np.arange(9, dtype=np.float32), np.arange(9), batch_size=3)
    b = NDArrayIter(np.arange(9, dtype=np.float32) * 2, np.arange(9), batch_size=3,
                    data_name="x", label_name="y")
    it = PrefetchingIter([a, b], rename_data=[{"data": "d0"}, {"x": "d1"}])
    assert [d.name for d in it.provide_data] == ["d0", "d1"]
    assert it.batch_size == 3
    for epoch in range(2):
        if epoch:
            it.reset()
        batches = list(it)
        assert len(batches) == 3
        for bt in batches:
            assert len(bt.data) == 2 and len(bt.label) == 2
            assert np.array_equal(bt.data[1], bt.data[0] * 2)
    it.close()


def test_prefetching_single_iterator_and_pad():
    it = PrefetchingIter(NDArrayIter(np.arange(5, dtype=np.float32), batch_size=2))
    pads = [b.pad for b in it]
    assert pads == [0, 0, 1]
    it.close()


class _Boom(DataIter):
    def __init__(self):
        super().__init__(2)
        self.n = 0
        self.provide_data = [("data", (2,))]
        self.provide_label = []

    def next(self):
        self.n += 1
        if self.n == 2:
            raise ValueError("record 7 is broken")
        return DataBatch([np.zeros(2)], [], pad=0)

    def reset(self):
        self.n = 0


def test_inner_exception_reaches_consumer_without_hanging():
    it = PrefetchingIter(_Boom())
    it.next()
    with pytest.raises(ValueError, match="record 7"):
        it.next()
    it.close()
