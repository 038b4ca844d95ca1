"""cache='shards' on real loopback S3: processes of one node share one download."""
import multiprocessing as mp

import numpy as np
import pytest

from _forking import run_in_fork
from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.fetch import RecordFetcher

pytestmark = pytest.mark.s3


def _epoch(urls, so, cache_dir, barrier, q):
    import os
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "testing")
    ds = open_dataset(urls, storage_options=so)
    f = RecordFetcher(ds, cache="shards", cache_dir=cache_dir)
    barrier.wait(timeout=60)
    got = {rid: p for rid, p in f.fetch(np.random.default_rng(os.getpid()).permutation(len(ds)))}
    q.put((f._cache.cache.downloads, f._cache.cache.hits,
           {int(r): bytes(p) for r, p in got.items()}))


def test_two_processes_download_each_shard_once(s3_server, fault_proxy, tmp_path):
    bucket = s3_server.new_bucket("cache2p")
    urls, truth = write_synthetic(bucket, 2, 200, seed=31, min_size=20_000, max_size=40_000,
                                  storage_options=s3_server.storage_options)
    # the proxy slows every request so both processes surely overlap
    fault_proxy.configure(latency_ms=150)
    so = fault_proxy.storage_options
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(2), ctx.Queue()
    ps = [ctx.Process(target=_epoch, args=(urls, so, str(tmp_path / "cache"), barrier, q))
          for _ in range(2)]
    for p in ps:
        p.start()
    res = [q.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(30)
    assert sorted(r[0] for r in res) in ([0, 2], [1, 1])  # 2 shards, each downloaded once
    assert sum(r[0] for r in res) == 2 and sum(r[1] for r in res) == 2
    ds = open_dataset(urls, storage_options=s3_server.storage_options)
    for _, _, got in res:
        assert len(got) == 400
        for rid, p in got.items():
            assert p == truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))]
    # per process and shard: HEAD (info), HEAD + GET (.idx, s3fs sizes it first);
    # plus one GET per shard download (each < 8 MB): a second download would add more
    assert fault_proxy.stats()["requests"] <= 2 * 2 * 3 + 2


def test_fetcher_used_then_forked_reads_s3_in_the_child(s3_server):
    """DataLoader workers fork a process whose s3fs loop thread is already running."""
    bucket = s3_server.new_bucket("fork")
    urls, truth = write_synthetic(bucket, 2, 30, seed=32, storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=s3_server.storage_options)
    f = RecordFetcher(ds)
    assert f.get(0) == truth[(0, 0)]
    got = run_in_fork(lambda: [p for _, p in f.fetch([59, 1])] == [truth[(1, 59)], truth[(0, 1)]],
                      child_timeout=60, wait=90)
    assert got == b"1"
    assert f.get(30) == truth[(1, 30)]  # the parent is unaffected


def test_a_rank_reading_half_a_shard_leaves_it_downloaded_once_and_cached(s3_server, fault_proxy,
                                                                          tmp_path):
    """The rank's loop ends while its shard's download still runs (it needs only the first
    half): the iteration waits for the download to publish, so a DataLoader worker that
    exits right after it never kills a download the node's other processes follow (one
    of them would take the lock and fetch the whole shard again)."""
    pytest.importorskip("torch")
    import os

    from cloudrec.storage.cache import ShardCache
    from cloudrec.torch import RecordIterableDataset
    bucket = s3_server.new_bucket("cachehalf")
    urls, truth = write_synthetic(bucket, 1, 60, seed=33, min_size=60_000, max_size=80_000,
                                  storage_options=s3_server.storage_options)
    so = fault_proxy.storage_options
    ds = open_dataset(urls, storage_options=so)
    cache_dir = str(tmp_path / "cache")
    rds = RecordIterableDataset(ds, decode=bytes, collate=list, batch_size=10, mode="none",
                                rank=0, world_size=2,
                                fetch_options={"cache": "shards", "cache_dir": cache_dir})
    fault_proxy.configure(mb_per_s=3)   # the ~4 MB shard takes over a second to arrive
    ids, payloads = [], []
    for batch in rds:
        ids += batch["ids"].tolist()
        payloads += batch["data"]
    assert ids == list(range(30))       # the first half of the only shard
    assert payloads == [truth[(0, int(ds.table.key[i]))] for i in ids]
    sh = ds.shards[0]
    assert ShardCache(cache_dir).lookup(sh.rec_url, sh.size, sh.version) is not None
    assert [n for n in os.listdir(cache_dir) if ".tmp." in n or n.endswith(".part")] == []
    assert fault_proxy.traffic()["GET .rec"] == {"requests": 1, "bytes": sh.size}
