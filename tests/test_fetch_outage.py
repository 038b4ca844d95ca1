"""An S3 endpoint that refuses connections (botocore's EndpointConnectionError) is a
transient failure: a 1.5 s outage mid-epoch on loopback is ridden out with the default
retry policy, retries show in ``fetcher.stats``, and a dead endpoint fails within the
policy's time bound with a clear StorageError."""
import re
import threading
import time

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.retry import RetryPolicy, is_transient
from cloudrec.testing import FaultProxy
from cloudrec.testing.servers import port_open

pytestmark = pytest.mark.s3

OUTAGE_S = 1.5


def test_refused_connections_and_connect_timeouts_are_transient():
    from botocore.exceptions import (ClientError, ConnectTimeoutError, EndpointConnectionError,
                                     SSLError)
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k"))
    assert is_transient(ConnectTimeoutError(endpoint_url="http://127.0.0.1:1/b/k"))
    assert is_transient(ConnectionRefusedError(111, "Connection refused"))
    assert not is_transient(SSLError(endpoint_url="https://h", error="certificate verify failed"))
    assert not is_transient(ClientError({"Error": {"Code": "PreconditionFailed"},
                                         "ResponseMetadata": {"HTTPStatusCode": 412}}, "GetObject"))


@pytest.fixture
def private_proxy(s3_server):
    """A fault proxy of this test alone (it gets stopped and restarted on its port)."""
    proxy = FaultProxy(s3_server.endpoint_url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def outage_dataset(s3_server):
    bucket = s3_server.new_bucket("outage")
    return write_synthetic(bucket, 4, 300, seed=51, min_size=500, max_size=2500,
                           storage_options=s3_server.storage_options)


def test_endpoint_outage_mid_epoch_is_survived(private_proxy, outage_dataset):
    urls, truth = outage_dataset
    ds = open_dataset(urls, storage_options=private_proxy.storage_options)
    private_proxy.configure(latency_ms=10)  # a few seconds of small GETs
    order = np.random.default_rng(5).permutation(len(ds))
    # one GET per record, little read-ahead: requests keep coming during the outage
    f = RecordFetcher(ds, max_gap=-1, concurrency=4, readahead_bytes=48 << 10,
                      window_bytes=16 << 10)
    downtime = {}
    done = threading.Event()

    def outage():
        t0 = time.monotonic()
        private_proxy.stop(keep_workdir=True)
        downtime["refused"] = not port_open(private_proxy.port)
        time.sleep(OUTAGE_S)
        private_proxy.start()  # same port
        downtime["s"] = time.monotonic() - t0
        private_proxy.configure(latency_ms=10)
        # the proxy dies with the thread that started it (PR_SET_PDEATHSIG): stay until the end
        done.wait(120)

    t = threading.Thread(target=outage, daemon=True)
    got = []
    try:
        for rid, payload in f.fetch(order):
            got.append((rid, payload))
            if len(got) == 150:
                t.start()
    finally:
        st = f.stats
        f.close()
        private_proxy.stop()
        done.set()
        t.join(30)
    assert downtime["refused"] and "s" in downtime
    assert [r for r, _ in got] == order.tolist()
    bad = [r for r, p in got if p != truth[(int(ds.table.shard[r]), int(ds.table.key[r]))]]
    assert bad == []
    print(f"\noutage of {downtime['s']:.2f} s survived with {st['retries']} retries; {st}")
    assert st["retries"] >= 1 and st["failures"] == 0
    assert st["requests"] == len(ds)  # max_gap=-1: one request per record


def test_dead_endpoint_fails_within_the_time_bound(private_proxy, outage_dataset):
    urls, _ = outage_dataset
    ds = open_dataset(urls[:1], storage_options=private_proxy.storage_options)
    private_proxy.stop(keep_workdir=True)
    policy = RetryPolicy(max_attempts=1000, base_delay=0.05, max_delay=0.2, max_elapsed=1.0)
    f = RecordFetcher(ds, retry=policy)
    with pytest.raises(StorageError) as ei:
        list(f.fetch([0]))
    msg = str(ei.value)
    attempts = int(re.search(r"after (\d+) attempt\(s\)", msg).group(1))
    # max_elapsed, not max_attempts, ended it: the waits (>= 25, 50, 100, 100 ... ms) pass
    # 1 s within a few dozen attempts
    assert 2 <= attempts < 60, msg
    # refused: botocore's name for it, or aiohttp's on the direct GET path
    assert urls[0] in msg and ("EndpointConnectionError" in msg or "Cannot connect to host" in msg)
    assert f.stats["retries"] == attempts - 1 and f.stats["failures"] == 1
    assert policy.retries == 0  # the fetcher counts on its own copy
    f.close()
