"""DataDesc / DataBatch / DataIter behave like MXNet's mx.io base classes."""
import pickle

import numpy as np
import pytest

from cloudrec.io import DataBatch, DataDesc, DataIter


def test_datadesc_is_a_two_tuple_with_extras():
    d = DataDesc("data", [4, 3, 32, 32], np.uint8, "NCHW")
    assert d == ("data", (4, 3, 32, 32))
    name, shape = d
    assert (name, shape) == ("data", (4, 3, 32, 32))
    assert d.dtype is np.uint8 and d.layout == "NCHW"
    assert repr(d) == "DataDesc[data,(4, 3, 32, 32),<class 'numpy.uint8'>,NCHW]"
    d2 = pickle.loads(pickle.dumps(d))
    assert d2 == d and d2.dtype is np.uint8 and d2.layout == "NCHW"


def test_datadesc_defaults_and_helpers():
    d = DataDesc("x", (2,))
    assert d.dtype is np.float32 and d.layout == "NCHW"
    assert DataDesc.get_batch_axis(None) == 0
    assert DataDesc.get_batch_axis("TNC") == 1
    lst = DataDesc.get_list([("a", (1, 2)), ("b", (3,))], [("a", np.int64), ("b", np.float16)])
    assert [x.dtype for x in lst] == [np.int64, np.float16]
    assert DataDesc.get_list([("a", (1,))], None)[0].dtype is np.float32


def test_databatch_checks_and_str():
    b = DataBatch([np.zeros((2, 3))], [np.zeros(2)], pad=1, index=np.arange(2))
    assert b.pad == 1 and list(b.index) == [0, 1]
    assert str(b) == "DataBatch: data shapes: [(2, 3)] label shapes: [(2,)]"
    assert str(DataBatch([np.zeros(1)])) == "DataBatch: data shapes: [(1,)] label shapes: None"
    with pytest.raises(AssertionError):
        DataBatch(np.zeros(3))
    with pytest.raises(AssertionError):
        DataBatch([np.zeros(3)], label=np.zeros(3))


class _Count(DataIter):
    """Three batches of two: the custom-iterator recipe of MXNet's docs."""

    def __init__(self):
        super().__init__(batch_size=2)
        self.i = 0

    def reset(self):
        self.i = 0

    def iter_next(self):
        self.i += 1
        return self.i <= 3

    def getdata(self):
        return [np.full((2, 1), self.i)]

    def getlabel(self):
        return [np.full((2,), -self.i)]

    def getpad(self):
        return 1 if self.i == 3 else 0


def test_dataiter_subclass_iterates_and_resets():
    it = _Count()
    assert iter(it) is it and it.batch_size == 2
    got = [(int(b.data[0][0, 0]), int(b.label[0][0]), b.pad, b.index) for b in it]
    assert got == [(1, -1, 0, None), (2, -2, 0, None), (3, -3, 1, None)]
    with pytest.raises(StopIteration):
        it.next()
    it.reset()
    assert int(next(it).data[0][0, 0]) == 1


def test_base_dataiter_is_empty():
    it = DataIter()
    assert it.batch_size == 0
    assert list(it) == []
    assert it.getindex() is None
