"""az:// through adlfs against a real azurite blob server on 127.0.0.1 (npm azurite@3.37.0):
the storage suite's cases (glob, brace, shuffled fetch, ranges, scan, bad input, cache),
plus exact-byte ranges, missing shard / .idx errors and an MXIndexedRecordIO round trip.
If azurite cannot start here, these tests fail with its error (never skipped)."""
import time
import uuid

import numpy as np
import pytest

import test_storage_backends as suite
from cloudrec.dataset import open_dataset
from cloudrec.errors import IndexFileError, StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.recordio import MXIndexedRecordIO
from cloudrec.storage.fs import resolve
from cloudrec.testing.azurite import AzuriteServer
from cloudrec.testing.stores import Store

START_LIMIT_S = 60.0


@pytest.fixture(scope="module")
def azurite():
    t0 = time.monotonic()
    with AzuriteServer(start_timeout=START_LIMIT_S) as server:
        server.total_start_seconds = time.monotonic() - t0  # install (first run) + launch
        yield server


@pytest.fixture
def az_store(azurite):
    container = azurite.new_container()
    return Store("az", f"{container}/data-{uuid.uuid4().hex[:6]}", azurite.storage_options)


def test_azurite_starts_within_a_minute(azurite):
    print(f"\nazurite: launch {azurite.startup_seconds:.2f} s, install {azurite.install_seconds:.2f} s, "
          f"total {azurite.total_start_seconds:.2f} s, pid {azurite.pids}")
    assert azurite.endpoint_url.startswith("http://127.0.0.1:")
    assert azurite.startup_seconds < START_LIMIT_S
    assert sorted(azurite.pids) == ["azurite"]


@pytest.mark.parametrize("case", suite._CASES + [suite.test_cache_mode], ids=lambda c: c.__name__[5:])
def test_storage_suite_on_azure(az_store, case, tmp_path):
    if case is suite.test_cache_mode:
        case(az_store, tmp_path)
    else:
        case(az_store)


def test_shuffled_fetch_exact_bytes_and_ranges(az_store):
    urls, truth = suite._write(az_store, n_shards=4, per=50, seed=11)
    so = az_store.storage_options
    ds = open_dataset(az_store.url("train-{0000..0003}.rec"), storage_options=so)
    assert [s.rec_url for s in ds.shards] == urls and len(ds) == 200
    assert all(s.rec_url.startswith("az://") for s in ds.shards)
    order = np.random.default_rng(5).permutation(len(ds))
    with RecordFetcher(ds, concurrency=8, max_gap=2048, max_request=16384) as f:
        got = list(f.fetch(order))
        assert [r for r, _ in got] == order.tolist()
        for r, p in got:
            assert p == truth[(int(ds.table.shard[r]), int(ds.table.key[r]))]
        assert f.get(int(order[-1])) == got[-1][1]
    # ranges straight from the record table are the framed records, byte for byte
    fs, _ = resolve(urls[0], so)
    raw = az_store.get("train-0000.rec")
    rows = np.flatnonzero(ds.table.shard == 0)[[0, 7, 49]]
    paths = [resolve(urls[0], so)[1]] * len(rows)
    starts = [int(ds.table.offset[r]) for r in rows]
    ends = [int(ds.table.offset[r] + ds.table.length[r]) for r in rows]
    assert fs.cat_ranges(paths, starts, ends) == [raw[a:b] for a, b in zip(starts, ends)]


def test_missing_shard_and_idx_name_the_url(az_store):
    urls, _ = suite._write(az_store, n_shards=2, per=5, seed=12)
    so = az_store.storage_options
    missing = az_store.url("train-0007.rec")
    with pytest.raises(StorageError) as ei:
        open_dataset([urls[0], missing], storage_options=so)
    assert missing in str(ei.value)
    az_store.fs.rm(az_store.path("train-0001.idx"))
    with pytest.raises(IndexFileError) as ei:
        open_dataset(urls, storage_options=so)
    assert az_store.url("train-0001.idx") in str(ei.value)
    with pytest.raises(StorageError, match="no-such-container"):
        open_dataset("az://no-such-container-x1/train-0000.rec", storage_options=so)


def test_indexed_recordio_round_trip(az_store):
    rng = np.random.default_rng(13)
    payloads = {k: rng.bytes(int(rng.integers(0, 3000))) for k in range(60)}
    payloads[5] = b""
    rec, idx = az_store.url("rt/data.rec"), az_store.url("rt/data.idx")
    w = MXIndexedRecordIO(idx, rec, "w", storage_options=az_store.storage_options)
    for k, p in payloads.items():
        w.write_idx(k, p)
    w.close()
    assert az_store.exists("rt/data.rec") and az_store.exists("rt/data.idx")
    r = MXIndexedRecordIO(idx, rec, "r", storage_options=az_store.storage_options)
    assert sorted(r.keys) == list(payloads)
    for k in rng.permutation(60).tolist():
        assert r.read_idx(k) == payloads[k], k
    r.close()
    ds = open_dataset(rec, storage_options=az_store.storage_options)
    got = dict(RecordFetcher(ds).fetch(rng.permutation(60)))
    assert {int(ds.table.key[i]): p for i, p in got.items()} == payloads


def test_failed_start_raises_with_the_log(azurite):
    with pytest.raises(Exception) as ei:
        AzuriteServer(port=azurite.port, start_timeout=START_LIMIT_S).start()
    assert "azurite" in str(ei.value) and "EADDRINUSE" in str(ei.value)
