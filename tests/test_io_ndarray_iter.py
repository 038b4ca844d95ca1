"""NDArrayIter: MXNet's batch counts, pads, roll-over and naming (mx test_io.py numbers)."""
import numpy as np
import pytest

from cloudrec.io import DataDesc, NDArrayIter


def _data():
    data = np.ones([1000, 2, 2], np.float32)
    labels = np.ones([1000, 1], np.float32)
    for i in range(1000):
        data[i] = i // 100
        labels[i] = i // 100
    return data, labels


@pytest.mark.parametrize("handle,batches,count0,count8", [("pad", 8, 124, 100),
                                                          ("discard", 7, 100, 96),
                                                          ("roll_over", 7, 100, 96)])
def test_last_batch_handle_counts(handle, batches, count0, count8):
    data, labels = _data()
    it = NDArrayIter(data, labels, 128, False, last_batch_handle=handle)
    counts = np.zeros(10, int)
    n = 0
    for b in it:
        lab = b.label[0].ravel()
        assert (b.data[0][:, 0, 0] == lab).all()
        assert b.data[0].shape == (128, 2, 2)
        np.add.at(counts, lab.astype(int), 1)
        n += 1
        last = b
    assert (n, counts[0], counts[8]) == (batches, count0, count8)
    assert last.pad == (24 if handle == "pad" else 0)


def test_roll_over_next_epoch_equals_the_padded_batch():
    data, labels = _data()
    pad_last = list(NDArrayIter(data, labels, 128, last_batch_handle="pad"))[-1]
    it = NDArrayIter(data, labels, 128, last_batch_handle="roll_over")
    assert len(list(it)) == 7
    it.reset()
    first = it.next()
    assert first.pad == 104  # MXNet reports -cursor: the rolled-over count
    assert np.array_equal(first.data[0], pad_last.data[0])
    assert len(list(it)) == 7  # 1000 - 24 = 976 left: 7 more full batches, 80 rolled again
    it.hard_reset()
    assert it.next().pad == 0


def test_pad_tiles_when_batch_exceeds_data():
    it = NDArrayIter(np.arange(3, dtype=np.float32), np.arange(3), batch_size=8)
    b = it.next()
    assert b.pad == 5 and b.data[0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    with pytest.raises(StopIteration):
        it.next()


def test_names_dtypes_and_provide():
    a = np.zeros((10, 3), np.int64)
    it = NDArrayIter({"b": a, "a": np.zeros((10, 2))}, {"softmax_label": [[1]] * 10}, batch_size=4)
    assert [d.name for d in it.provide_data] == ["a", "b"]  # sorted, as MXNet
    assert it.provide_data[1] == DataDesc("b", (4, 3)) and it.provide_data[1].dtype == np.int64
    assert it.provide_label[0] == ("softmax_label", (4, 1))
    assert it.provide_label[0].dtype == np.float32  # lists become float32 (mx.nd.array)
    it = NDArrayIter([np.zeros((6, 1)), np.ones((6, 1))], batch_size=3)
    assert [d.name for d in it.provide_data] == ["_0_data", "_1_data"]
    assert it.next().label == []
    with pytest.raises(ValueError, match="rows"):
        NDArrayIter(np.zeros((5, 1)), np.zeros((4,)))


def test_shuffle_is_seeded_and_keeps_pairs():
    x = np.arange(50, dtype=np.float32)
    it1 = NDArrayIter(x, x * 10, batch_size=10, shuffle=True, seed=3)
    it2 = NDArrayIter(x, x * 10, batch_size=10, shuffle=True, seed=3)
    e1 = np.concatenate([b.data[0] for b in it1])
    e2 = np.concatenate([b.data[0] for b in it2])
    assert np.array_equal(e1, e2) and not np.array_equal(e1, x)
    assert sorted(e1.tolist()) == x.tolist()
    it1.reset()
    for b in it1:
        assert np.array_equal(b.label[0], b.data[0] * 10)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 60), batch=st.integers(1, 16))
def test_counts_for_any_size(n, batch):
    x = np.arange(n, dtype=np.float32)
    pad = list(NDArrayIter(x, batch_size=batch, last_batch_handle="pad"))
    assert len(pad) == -(-n // batch)
    assert all(b.data[0].shape == (batch,) for b in pad)
    assert np.concatenate([b.data[0] for b in pad])[:n].tolist() == x.tolist()
    assert pad[-1].pad == len(pad) * batch - n
    tail = pad[-1].data[0][batch - pad[-1].pad:]
    assert tail.tolist() == np.resize(x, pad[-1].pad).tolist()  # from the start, tiled
    assert len(list(NDArrayIter(x, batch_size=batch, last_batch_handle="discard"))) == n // batch
    it = NDArrayIter(x, batch_size=batch, last_batch_handle="roll_over")
    stream = []
    for e in range(3):
        if e:
            it.reset()
        for b in it:
            assert b.data[0].shape == (batch,)
            stream += b.data[0].tolist()
    assert stream == np.resize(x, len(stream)).tolist()  # epochs back to back
    assert 3 * n - len(stream) < batch
