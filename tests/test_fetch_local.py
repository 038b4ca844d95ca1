"""RecordFetcher on local disk and memory://: order, bytes, corruption, bounds."""
import os

import fsspec
import numpy as np
import pytest

from _forking import run_in_fork
from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import RecordIOError
from cloudrec.reader.fetch import RecordFetcher


@pytest.fixture(params=["local", "memory"])
def base(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path)
        return
    url = f"memory://fetch-{os.getpid()}-{abs(hash(request.node.name))}"
    yield url
    fsspec.filesystem("memory").rm(url.split("://")[1], recursive=True)


def _expected(ds, truth, rid):
    return truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))]


@pytest.mark.parametrize("kw", [
    {},
    {"max_gap": -1, "concurrency": 1},
    {"max_gap": 1 << 30, "max_request": 1000, "readahead_bytes": 1 << 14},
    {"window_bytes": 1, "readahead_bytes": 1},
])
def test_shuffled_pass_returns_every_record_in_order(base, kw):
    urls, truth = write_synthetic(base, 4, 60, seed=7, max_size=3000)
    ds = open_dataset(base + "/train-*.rec")
    order = np.random.default_rng(0).permutation(len(ds))
    with RecordFetcher(ds, **kw) as f:
        got = list(f.fetch(order))
    assert [r for r, _ in got] == order.tolist()
    assert all(p == _expected(ds, truth, r) for r, p in got)


def test_duplicates_generators_and_get(base):
    _, truth = write_synthetic(base, 2, 30, seed=8)
    ds = open_dataset(base + "/train-*.rec")
    ids = [5, 5, 59, 0, 5, 31, 30]
    f = RecordFetcher(ds)
    got = list(f.fetch(x for x in ids))
    assert [r for r, _ in got] == ids
    assert all(p == _expected(ds, truth, r) for r, p in got)
    assert f.get(31) == _expected(ds, truth, 31)
    assert list(f.fetch([])) == []
    with pytest.raises(IndexError, match="60"):
        list(f.fetch([1, 60]))
    # stopping early is fine and the fetcher stays usable
    it = f.fetch(range(60))
    next(it)
    it.close()
    assert [r for r, _ in f.fetch(range(3))] == [0, 1, 2]
    f.close()


def test_corrupt_record_names_shard_key_and_offset(tmp_path):
    _, truth = write_synthetic(str(tmp_path), 2, 20, seed=9)
    ds = open_dataset(str(tmp_path / "train-*.rec"))
    rid = 25  # shard 1, key 25
    off = int(ds.table.offset[rid])
    path = tmp_path / "train-0001.rec"
    data = bytearray(path.read_bytes())
    data[off:off + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    f = RecordFetcher(ds)
    with pytest.raises(RecordIOError) as ei:
        list(f.fetch([0, 24, rid, 26]))
    e = ei.value
    assert e.url.endswith("train-0001.rec") and e.key == 25 and e.offset == off
    assert "bad magic" in str(e) and "key 25" in str(e)
    # neighbours of the broken record still read
    assert f.get(26) == _expected(ds, truth, 26)


def test_truncated_shard_is_an_error_not_short_data(tmp_path):
    write_synthetic(str(tmp_path), 1, 20, seed=10)
    ds = open_dataset(str(tmp_path / "train-0000.rec"))
    path = tmp_path / "train-0000.rec"
    path.write_bytes(path.read_bytes()[:-10])
    f = RecordFetcher(ds)
    from cloudrec.errors import StorageError
    with pytest.raises(StorageError, match=r"train-0000.rec bytes \["):
        list(f.fetch(range(20)))


def test_readahead_is_bounded(tmp_path):
    write_synthetic(str(tmp_path), 2, 200, seed=11, min_size=900, max_size=1000)
    ds = open_dataset(str(tmp_path / "train-*.rec"))
    f = RecordFetcher(ds, readahead_bytes=20_000, window_bytes=5_000, max_gap=-1)
    submitted = []
    orig = f._submit

    def spy(shard, a, b):
        submitted.append(b - a)
        return orig(shard, a, b)

    f._submit = spy
    it = f.fetch(np.arange(400))
    for _ in range(10):
        next(it)
    # in flight: at most readahead + one window (+ one record) beyond what was consumed
    consumed_windows = int(ds.table.length[:16].sum())  # 10 records, rounded up to windows
    assert 20_000 <= sum(submitted) <= 20_000 + 5_000 + 1000 + consumed_windows
    assert sum(submitted) < int(ds.table.length.sum()) / 4
    rest = list(it)
    assert len(rest) == 390 and sum(submitted) == int(ds.table.length.sum())


def test_pickle_and_fork(tmp_path):
    import pickle
    _, truth = write_synthetic(str(tmp_path), 2, 20, seed=12)
    ds = open_dataset(str(tmp_path / "train-*.rec"))
    f = RecordFetcher(ds)
    assert f.get(3) == _expected(ds, truth, 3)
    g = pickle.loads(pickle.dumps(f))
    assert [p for _, p in g.fetch([39, 0])] == [_expected(ds, truth, 39), _expected(ds, truth, 0)]
    got = run_in_fork(lambda: f.get(21) == _expected(ds, truth, 21), child_timeout=30, wait=60)
    assert got == b"1"
