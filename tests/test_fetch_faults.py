"""Faults through a proxy on loopback in front of moto: a full shuffled pass over a
2,000-record dataset returns every record exactly once with the right bytes."""
import collections

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.retry import RetryPolicy

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def faulty_dataset(s3_server):
    """4 shards x 500 records written straight to moto (not through the proxy)."""
    bucket = s3_server.new_bucket("faults")
    urls, truth = write_synthetic(bucket, 4, 500, seed=21, max_size=1500,
                                  storage_options=s3_server.storage_options)
    return urls, truth


def _policy(seed):
    return RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.2, timeout=1.0, seed=seed)


FAULTS = {
    "503": dict(p503=0.2),
    "500": dict(p500=0.2),
    "drop": dict(pdrop=0.2),
    "trunc": dict(ptrunc=0.2),
    "stall": dict(pstall=0.2, stall_s=30),
    "mixed": dict(p503=0.04, p500=0.04, pdrop=0.04, ptrunc=0.04, pstall=0.04, stall_s=30),
}


@pytest.mark.parametrize("kind", list(FAULTS))
def test_shuffled_pass_survives_faults(fault_proxy, faulty_dataset, kind):
    urls, truth = faulty_dataset
    fault_proxy.configure(seed=7, methods="GET,HEAD", **FAULTS[kind])
    so = fault_proxy.storage_options
    ds = open_dataset(urls, storage_options=so, retry=_policy(1))
    assert len(ds) == 2000
    order = np.random.default_rng(3).permutation(2000)
    # small windows and gaps: a few hundred requests, so ~20 % of them fail
    f = RecordFetcher(ds, retry=_policy(2), window_bytes=160 << 10, max_gap=24 << 10,
                      readahead_bytes=640 << 10, concurrency=16)
    got = list(f.fetch(order))
    f.close()
    assert [r for r, _ in got] == order.tolist()
    counts = collections.Counter(r for r, _ in got)
    assert len(counts) == 2000 and set(counts.values()) == {1}
    bad = [r for r, p in got if p != truth[(int(ds.table.shard[r]), int(ds.table.key[r]))]]
    assert bad == []
    st = fault_proxy.stats()
    assert st["requests"] >= 100, st
    assert st["faults"] >= 0.1 * st["requests"], st  # faults really happened


def test_bounded_retries_then_clear_error(fault_proxy, faulty_dataset):
    urls, _ = faulty_dataset
    ds = open_dataset(urls[:1], storage_options=fault_proxy.storage_options)
    fault_proxy.configure(p503=1.0, methods="GET")
    f = RecordFetcher(ds, retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02))
    with pytest.raises(StorageError) as ei:
        list(f.fetch([0, 1, 2]))
    msg = str(ei.value)
    assert urls[0] in msg and "bytes [0, " in msg and "after 3 attempt(s)" in msg
    assert "reduce your request rate" in msg or "SlowDown" in msg
    # every attempt reached the server: exactly 3 GETs, no hidden client retries
    assert fault_proxy.stats()["requests"] == 3


def test_missing_bucket_and_key_name_the_url(s3_server):
    so = s3_server.storage_options
    with pytest.raises(StorageError, match="s3://no-such-bucket-cloudrec/x.rec") as ei:
        open_dataset("s3://no-such-bucket-cloudrec/x.rec", storage_options=so)
    assert isinstance(ei.value, FileNotFoundError)
    bucket = s3_server.new_bucket("empty")
    with pytest.raises(StorageError, match=bucket + "/train-0000.rec"):
        open_dataset(bucket + "/train-0000.rec", storage_options=so)


def test_cache_download_survives_faults(fault_proxy, faulty_dataset, tmp_path):
    urls, truth = faulty_dataset
    so = fault_proxy.storage_options
    ds = open_dataset(urls, storage_options=so, retry=_policy(3))
    # every GET fails until six faults have been injected (only 4 shard downloads happen)
    fault_proxy.configure(seed=11, methods="GET", p503=0.25, pdrop=0.25, ptrunc=0.25, pstall=0.25,
                          stall_s=30, max_faults=6)
    order = np.random.default_rng(4).permutation(2000)
    f = RecordFetcher(ds, cache="shards", cache_dir=str(tmp_path / "c"), retry=_policy(4))
    got = list(f.fetch(order))
    assert f._cache.cache.downloads == 4
    f.close()
    assert [r for r, _ in got] == order.tolist()
    assert all(p == truth[(int(ds.table.shard[r]), int(ds.table.key[r]))] for r, p in got)
    st = fault_proxy.stats()
    assert st["faults"] == 6 and st["requests"] == 10, st
