"""Edge cases found in review: a closed fetcher, an unusable cache folder.

Each test would hang or raise a bare Python exception before its fix; now it
must end with correct data or a clear cloudrec error naming the URL/folder.
"""
import os
import threading

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import CloudrecError, StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.cache import ShardCache


def _drain_in_thread(gen, timeout=30.0):
    """Consume ``gen`` in a thread; return ('ok', items) / ('exc', exc) / ('hang', None)."""
    out = {}

    def run():
        try:
            out["ok"] = list(gen)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            out["exc"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        return "hang", None
    return ("ok", out["ok"]) if "ok" in out else ("exc", out["exc"])


def _check_ok_or_clear(kind, value, truth, ds, url_part):
    assert kind != "hang", "iterating a closed fetcher hung"
    if kind == "exc":
        assert isinstance(value, CloudrecError), f"bare {type(value).__name__}: {value!r}"
        assert url_part in str(value)
    else:
        for rid, payload in value:
            assert payload == truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))]


def test_closing_fetcher_mid_iteration_gives_data_or_clear_error(tmp_path):
    urls, truth = write_synthetic(str(tmp_path), 2, 200, seed=3, min_size=500, max_size=2000)
    ds = open_dataset(urls)
    # one reader thread and tiny windows: many requests are still queued at close()
    f = RecordFetcher(ds, concurrency=1, window_bytes=4096, readahead_bytes=1 << 20,
                      max_gap=-1)
    gen = f.fetch(np.random.default_rng(0).permutation(len(ds)))
    next(gen)
    f.close()
    kind, value = _drain_in_thread(gen)
    _check_ok_or_clear(kind, value, truth, ds, str(tmp_path))


@pytest.mark.s3
def test_closing_caching_fetcher_with_pending_downloads_does_not_hang(s3_server, fault_proxy,
                                                                      tmp_path):
    bucket = s3_server.new_bucket("edgeclose")
    urls, truth = write_synthetic(bucket, 10, 20, seed=4, min_size=1000, max_size=3000,
                                  storage_options=s3_server.storage_options)
    fault_proxy.configure(latency_ms=100)  # downloads (4 at a time) stay queued
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    f = RecordFetcher(ds, cache="shards", cache_dir=str(tmp_path / "cache"))
    order = np.arange(len(ds)).reshape(10, 20).T.reshape(-1)  # every shard in window 1
    gen = f.fetch(order)
    next(gen)
    f.close()
    kind, value = _drain_in_thread(gen)
    _check_ok_or_clear(kind, value, truth, ds, bucket)


def test_cache_dir_under_a_file_is_a_storage_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"x")
    with pytest.raises(StorageError, match="not-a-dir"):
        ShardCache(str(blocker / "cache"))


def test_cache_dir_removed_after_start_is_recreated_or_clear(tmp_path):
    cache_dir = tmp_path / "cache"
    c = ShardCache(str(cache_dir))
    os.rmdir(cache_dir)

    def download(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"y" * 40)

    try:
        path = c.get("s3://b/x.rec", 40, "etag=1", download)
    except CloudrecError as exc:
        assert str(cache_dir) in str(exc)
    else:
        with open(path, "rb") as fh:
            assert fh.read() == b"y" * 40


# ---- .idx parsing: the bulk int path must not accept what the line-by-line parse rejects
from cloudrec.errors import IndexFileError  # noqa: E402
from cloudrec.format.idx import parse_idx  # noqa: E402


@pytest.mark.parametrize("data", [
    b"1\t0 5\n\t8\n",       # two tabs/numbers shuffled across lines
    b"0\t4\t8\n12\n",      # a line with two tabs and a line with none
])
def test_idx_with_misplaced_tabs_is_rejected_not_misread(data):
    with pytest.raises(IndexFileError, match="line 1"):
        parse_idx(data, "s3://b/x.idx")


def test_idx_key_beyond_int64_is_not_clamped():
    data = b"99999999999999999999\t0\n1\t8\n"
    with pytest.raises(IndexFileError, match="x.idx"):
        parse_idx(data, "s3://b/x.idx")
    keys, offsets = parse_idx(data, "s3://b/x.idx", key_type=str)
    assert list(keys) == ["99999999999999999999", "1"] and offsets.tolist() == [0, 8]


def test_dataset_with_huge_keys_falls_back_to_string_keys(tmp_path):
    from cloudrec.dataset.synthetic import build_shard
    rec, _ = build_shard([b"a" * 5, b"b" * 7], [0, 1])
    (tmp_path / "h.rec").write_bytes(rec)
    (tmp_path / "h.idx").write_bytes(b"99999999999999999999\t0\n7\t16\n")
    ds = open_dataset(str(tmp_path / "h.rec"))
    assert list(ds.table.key) == ["99999999999999999999", "7"]
    with RecordFetcher(ds) as f:
        assert [p for _, p in f.fetch([1, 0])] == [b"b" * 7, b"a" * 5]


# ---- small and odd datasets on every store, with and without the shard cache
@pytest.mark.parametrize("cache", ["none", "shards"])
def test_odd_shards_read_back_exactly_on_every_store(store, cache, tmp_path):
    from cloudrec.dataset.synthetic import build_shard
    big = np.random.default_rng(9).bytes(3 << 20)
    shards = {
        "empty": ([], []),                       # an empty .rec and an empty .idx
        "one": ([b"only"], [5]),                 # a single record
        "zero": ([b"", b"z", b""], [0, 1, 2]),   # zero-byte payloads
        "big": ([b"a", big, b"b"], [0, 1, 2]),   # a record larger than max_request
    }
    for name, (payloads, keys) in shards.items():
        rec, idx = build_shard(payloads, keys)
        store.put(f"{name}.rec", rec)
        store.put(f"{name}.idx", idx)
    urls = [store.url(f"{n}.rec") for n in shards]
    ds = open_dataset(urls, storage_options=store.storage_options)
    want = [p for payloads, _ in shards.values() for p in payloads]
    assert len(ds) == len(want) == 7
    with RecordFetcher(ds, cache=cache, cache_dir=str(tmp_path / "cache"), max_request=1 << 20,
                       window_bytes=1 << 20, readahead_bytes=2 << 20) as f:
        ids = [6, 4, 0, 5, 5, 1, 2, 3, 0]
        assert [p for _, p in f.fetch(ids)] == [want[i] for i in ids]
        assert list(f.fetch([])) == []
        for bad in (-1, len(ds)):
            with pytest.raises(IndexError, match=str(bad)):
                list(f.fetch([0, bad]))


# ---- a cache cap smaller than the shards being read at once
@pytest.mark.s3
def test_cache_cap_of_one_shard_under_concurrent_downloads_reads_everything(s3_server, tmp_path):
    bucket = s3_server.new_bucket("edgecap")
    urls, truth = write_synthetic(bucket, 8, 10, seed=6, min_size=3000, max_size=3000,
                                  storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=s3_server.storage_options)
    cap = max(s.size for s in ds.shards) + 1   # room for one shard: every download evicts
    order = np.arange(len(ds)).reshape(8, 10).T.reshape(-1)  # all shards wanted at once
    for trial in range(6):
        with RecordFetcher(ds, cache="shards", cache_dir=str(tmp_path / f"c{trial}"),
                           cache_max_bytes=cap) as f:
            got = list(f.fetch(order))
        assert [i for i, _ in got] == order.tolist()
        for rid, payload in got:
            assert payload == truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))]


def test_empty_idx_for_a_non_empty_rec_is_an_error_not_an_empty_shard(tmp_path):
    from cloudrec.dataset.synthetic import build_shard
    rec, idx = build_shard([b"abc", b"defg"], [0, 1])
    (tmp_path / "a.rec").write_bytes(rec)
    (tmp_path / "a.idx").write_bytes(idx)
    (tmp_path / "b.rec").write_bytes(rec)
    (tmp_path / "b.idx").write_bytes(b"")      # im2rec killed before the .idx was written
    with pytest.raises(IndexFileError, match=r"b\.idx.*") as ei:
        open_dataset([str(tmp_path / "a.rec"), str(tmp_path / "b.rec")])
    assert "b.rec" in str(ei.value) and "no records" in str(ei.value)
    (tmp_path / "e.rec").write_bytes(b"")
    (tmp_path / "e.idx").write_bytes(b"")
    assert len(open_dataset(str(tmp_path / "e.rec"))) == 0   # empty and empty: fine


@pytest.mark.parametrize("used", [False, True])
def test_caching_fetcher_pickles_like_a_plain_one(tmp_path, used):
    import pickle
    urls, truth = write_synthetic(str(tmp_path), 2, 6, seed=8)
    ds = open_dataset(urls)
    f = RecordFetcher(ds, cache="shards", cache_dir=str(tmp_path / "cache"))
    if used:
        assert len(list(f.fetch(range(len(ds))))) == len(ds)
    g = pickle.loads(pickle.dumps(f))   # e.g. a DataLoader starting 'spawn' workers
    for rid, payload in g.fetch([11, 0, 5, 6]):
        assert payload == truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))]
    f.close()
    g.close()


@pytest.mark.parametrize("sibling", [b"", b"0\t4096\n", b"not an index\n"])
def test_without_require_index_a_broken_sibling_idx_is_an_error_or_a_warned_scan(tmp_path,
                                                                               sibling):
    # issue #15: an .idx that exists is authoritative, also for ImageRecordIter without
    # path_imgidx (a silent scan hid records the .idx proved missing); the documented
    # on_index_mismatch='scan' reads the .rec as MXNet's sequential reader would, warning
    from cloudrec.dataset import IndexMismatchWarning
    from cloudrec.dataset.synthetic import build_shard
    from cloudrec.iterators._records import RecordSource
    payloads = [b"abc", b"", b"defgh" * 9]
    rec, _ = build_shard(payloads, [0, 1, 2])
    (tmp_path / "s.rec").write_bytes(rec)
    (tmp_path / "s.idx").write_bytes(sibling)
    with pytest.raises(IndexFileError, match=r"s\.idx") as exc:
        RecordSource(str(tmp_path / "s.rec"))
    assert "s.rec" in str(exc.value) and "on_index_mismatch" in str(exc.value)
    with pytest.warns(IndexMismatchWarning, match=r"scanning .*s\.rec"):
        ds = open_dataset(str(tmp_path / "s.rec"), require_index=False,
                          on_index_mismatch="scan")
    assert ds.table.offset.tolist() == [0, 12, 20]
    with pytest.raises(IndexFileError, match=r"s\.idx"):
        open_dataset(str(tmp_path / "s.rec"))   # an index that is required still must be right


def test_open_dataset_argument_errors_are_cloudrec_errors(tmp_path):
    from cloudrec.dataset import open_dataset
    from cloudrec.errors import ConfigError
    with pytest.raises(ConfigError, match="no shard URLs"):
        open_dataset([])
    rec = tmp_path / "a.rec"
    rec.write_bytes(b"")
    with pytest.raises(ConfigError, match="1 shards but 2 index URLs"):
        open_dataset([str(rec)], [str(tmp_path / "a.idx"), str(tmp_path / "b.idx")])
