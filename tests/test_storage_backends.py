"""One suite over local disk, S3 (loopback moto) and HDFS (loopback Hadoop): dataset,
planner-driven fetch, scan without .idx, bad input and the shard cache."""
import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import IndexFileError, StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.ranged import make_range_reader


def _write(store, n_shards=3, per=40, seed=0, name="train-{:04d}", **kw):
    def put(url, data):
        store.put(url[len(store.base_url) + 1:], data)
    return write_synthetic(store.base_url, n_shards, per, seed=seed, put=put, name=name, **kw)


def _check(ds, truth, got, order):
    assert [r for r, _ in got] == list(order)
    for r, p in got:
        assert p == truth[(int(ds.table.shard[r]), int(ds.table.key[r]))], r


def test_open_glob_brace_and_shuffled_fetch(store):
    urls, truth = _write(store)
    so = store.storage_options
    ds = open_dataset(store.url("train-*.rec"), storage_options=so)
    ds2 = open_dataset(store.url("train-{0000..0002}.rec"), storage_options=so)
    assert [s.rec_url for s in ds.shards] == urls == [s.rec_url for s in ds2.shards]
    assert len(ds) == 120 and all(s.version for s in ds.shards)
    assert [s.size for s in ds.shards] == [len(store.get(f"train-{i:04d}.rec")) for i in range(3)]
    order = np.random.default_rng(1).permutation(len(ds))
    for kw in ({}, {"max_gap": -1, "concurrency": 4}, {"max_request": 3000}):
        with RecordFetcher(ds, **kw) as f:
            _check(ds, truth, list(f.fetch(order)), order.tolist())


def test_range_reader_exact_bytes(store):
    blob = bytes(range(256)) * 40
    url = store.put("blob.bin", blob)
    from cloudrec.storage.fs import resolve
    fs, path = resolve(url, store.storage_options)
    from cloudrec.storage.retry import RetryPolicy
    with make_range_reader(fs, concurrency=4, retry=RetryPolicy(max_attempts=2)) as r:
        ranges = [(0, 1), (5, 900), (1000, 10240), (10239, 10240), (7, 7)]
        assert r.read_ranges(path, ranges, url) == [blob[a:b] for a, b in ranges]
        with pytest.raises(StorageError, match=r"blob.bin bytes \[10000, 10300\)"):
            r.read(path, 10000, 10300, url)  # past the end: short read, never passed on


def test_scan_without_index(store):
    urls, truth = _write(store, 2, 30, seed=3, write_idx=False)
    with pytest.raises(IndexFileError, match="train-0000.idx"):
        open_dataset(urls, storage_options=store.storage_options)
    ds = open_dataset(urls, storage_options=store.storage_options, require_index=False)
    assert len(ds) == 60
    got = list(RecordFetcher(ds).fetch(range(60)))
    for r, p in got:
        s = int(ds.table.shard[r])
        assert p == truth[(s, s * 30 + int(ds.table.key[r]))]


def test_bad_input_names_the_url(store):
    urls, _ = _write(store, 1, 10, seed=4)
    so = store.storage_options
    with pytest.raises(StorageError, match="nope.rec") as ei:
        open_dataset(store.url("nope.rec"), storage_options=so)
    assert isinstance(ei.value, FileNotFoundError)
    with pytest.raises(StorageError, match="none-"):
        open_dataset(store.url("none-*.rec"), storage_options=so)
    with pytest.raises(IndexFileError, match="other.idx"):
        open_dataset(urls, idx_urls=[store.url("other.idx")], storage_options=so)
    store.put("cut.rec", store.get("train-0000.rec")[:200])
    store.put("cut.idx", store.get("train-0000.idx"))
    with pytest.raises(IndexFileError, match="past the end") as ei:
        open_dataset(store.url("cut.rec"), storage_options=so)
    assert "cut.idx" in str(ei.value)


def test_cache_mode(store, tmp_path):
    urls, truth = _write(store, 3, 30, seed=5)
    so = store.storage_options
    ds = open_dataset(urls, storage_options=so)
    order = np.random.default_rng(2).permutation(len(ds))
    cdir = str(tmp_path / "cache")
    f = RecordFetcher(ds, cache="shards", cache_dir=cdir)
    _check(ds, truth, list(f.fetch(order)), order.tolist())
    remote = store.name not in ("local", "memory")  # those are read in place
    assert f._cache.cache.downloads == (3 if remote else 0)
    f.close()
    g = RecordFetcher(ds, cache="auto", cache_dir=cdir)
    _check(ds, truth, list(g.fetch(order)), order.tolist())
    if remote:
        assert g._cache.cache.downloads == 0 and g._cache.cache.hits == 3
    g.close()
    # 'auto' caches only remote datasets that fit the cap; local ones are read in place
    assert RecordFetcher(ds, cache="auto", cache_dir=cdir, cache_max_bytes=1000)._cache is None
    auto = RecordFetcher(ds, cache="auto", cache_dir=cdir)
    assert (auto._cache is not None) == remote
    auto.close()
    # the object changes: a new dataset object sees the new version and refetches
    _, truth2 = _write(store, 1, 30, seed=6)
    ds2 = open_dataset(urls, storage_options=so)
    h = RecordFetcher(ds2, cache="shards", cache_dir=cdir)
    got = list(h.fetch(range(30)))
    assert [p for _, p in got] == [truth2[(0, k)] for k in range(30)]
    if remote:
        assert h._cache.cache.downloads == 1
        assert len(h._cache.cache.entries()) == 3
    h.close()


# -- the same cases on webhdfs:// (Hadoop's REST API) and memory:// --------------------------
_CASES = [test_open_glob_brace_and_shuffled_fetch, test_range_reader_exact_bytes,
          test_scan_without_index, test_bad_input_names_the_url]


@pytest.fixture(params=[pytest.param("webhdfs", marks=pytest.mark.hdfs), "memory"])
def extra_store(request):
    import uuid
    from cloudrec.testing.stores import Store, hdfs_store
    if request.param == "webhdfs":
        yield hdfs_store(request.getfixturevalue("hdfs_server"), via="webhdfs")
        return
    st = Store("memory", f"memory://cloudrec-test-{uuid.uuid4().hex[:12]}")
    yield st
    st.fs.rm(st.path(), recursive=True)


@pytest.mark.parametrize("case", _CASES, ids=lambda c: c.__name__[5:])
def test_extra_backends(extra_store, case):
    case(extra_store)


def test_extra_backend_cache(extra_store, tmp_path):
    test_cache_mode(extra_store, tmp_path)
