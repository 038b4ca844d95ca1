"""The process that opened a dataset warms the node's shard cache for its DataLoader workers.

DaemonPool (the cache's download threads) alone; then on real loopback S3 through the
fault proxy: ResumableLoader warms the cache in the main process, forked workers follow
those downloads, every sample arrives once with its bytes, every shard is downloaded
once; a program that exits while warming exits.
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.daemon_pool import DaemonPool
from cloudrec.reader.fetch import RecordFetcher


# ----------------------------------------------------------------------------- DaemonPool
def test_daemon_pool_results_errors_and_order():
    pool = DaemonPool(2, thread_name_prefix="t-warm")
    futs = [pool.submit(lambda i=i: i * i) for i in range(20)]
    assert [f.result(timeout=30) for f in futs] == [i * i for i in range(20)]
    bad = pool.submit(lambda: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        bad.result(timeout=30)
    names = {t.name for t in threading.enumerate() if t.name.startswith("t-warm")}
    assert 1 <= len(names) <= 2
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t-warm"))
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: 0)


def test_daemon_pool_shutdown_cancels_queued_jobs():
    pool = DaemonPool(1)
    gate = threading.Event()
    running = pool.submit(gate.wait, 30)
    queued = [pool.submit(lambda: "never") for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert running.result(timeout=30) is True
    with pytest.raises(ValueError):
        DaemonPool(0)


def test_a_running_daemon_job_does_not_hold_the_interpreter_at_exit():
    code = textwrap.dedent("""
        import threading
        from cloudrec.reader.daemon_pool import DaemonPool
        pool = DaemonPool(2)
        never = threading.Event()
        futs = [pool.submit(never.wait) for _ in range(2)]
        print("submitted", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "submitted"


# ----------------------------------------------------------------------------- S3
def _dataset(urls, so, cache_dir, **kw):
    from cloudrec.torch import RecordIterableDataset
    return RecordIterableDataset(urls, decode=bytes, collate=list, storage_options=so,
                                 batch_size=16, seed=3, mode="block", rank=0, world_size=1,
                                 fetch_options={"cache": "auto", "cache_dir": str(cache_dir)},
                                 **kw)


@pytest.mark.s3
def test_resumable_loader_warms_the_cache_and_workers_read_every_sample_once(
        s3_server, fault_proxy, tmp_path):
    from cloudrec.torch import ResumableLoader
    bucket = s3_server.new_bucket("warm")
    urls, truth = write_synthetic(bucket, 4, 120, seed=41, min_size=20_000, max_size=40_000,
                                  storage_options=s3_server.storage_options)
    so = fault_proxy.storage_options
    ds = _dataset(urls, so, tmp_path / "cache")
    table = ds.source.table
    fault_proxy.configure(latency_ms=20, clear_stats=True)
    loader = ResumableLoader(ds, num_workers=2, multiprocessing_context="fork")
    seen = {}
    for batch in loader:
        for rid, pad, payload in zip(batch["ids"].tolist(), batch["is_pad"].tolist(),
                                     batch["data"]):
            if not pad:
                assert rid not in seen
                seen[rid] = payload
    assert sorted(seen) == list(range(len(table)))
    for rid, payload in seen.items():
        assert payload == truth[(int(table.shard[rid]), int(table.key[rid]))]
    rec_gets = fault_proxy.traffic().get("GET .rec", {}).get("requests", 0)
    assert rec_gets == 4  # one download per shard for the whole node: main + 2 workers
    published = [n for _, _, names in os.walk(tmp_path / "cache") for n in names
                 if n.endswith(".data")]
    assert len(published) == 4
    assert ds.warm_cache(2) == 0  # everything is cached: nothing to start
    ds._fetcher.close()


@pytest.mark.s3
def test_warm_cache_orders_shards_by_first_need_and_skips_without_a_cache(
        s3_server, tmp_path):
    from cloudrec.torch import RecordIterableDataset
    bucket = s3_server.new_bucket("warmorder")
    urls, _ = write_synthetic(bucket, 4, 50, seed=42, storage_options=s3_server.storage_options)
    so = s3_server.storage_options
    ds = _dataset(urls, so, tmp_path / "c1")
    shard_of = np.asarray(ds.source.table.shard)
    order = ds._shards_by_need(2)
    # independently: per worker, the position of each shard's first record in its span
    first = {}
    for w in range(2):
        ids = np.asarray(ds.sampler.epoch_slice(w, 2).ids)
        for pos, sh in enumerate(shard_of[ids].tolist()):
            first.setdefault(sh, pos)
            first[sh] = min(first[sh], pos)
    assert order == sorted(first, key=lambda s: (first[s], s))
    assert sorted(order) == [0, 1, 2, 3]
    assert ds.warm_cache(2) == 4
    assert ds.warm_cache(2) == 0  # started already
    ds._fetcher._cache.wait_downloads()
    assert ds._fetcher.stats["cache_downloads"] == 4
    ds._fetcher.close()
    plain = RecordIterableDataset(urls, decode=bytes, storage_options=so, batch_size=8)
    assert plain.warm_cache(2) == 0  # no cache asked for: nothing downloaded
    assert plain._fetcher is None


@pytest.mark.s3
def test_a_program_that_exits_while_warming_exits_and_leaves_a_usable_cache(
        s3_server, fault_proxy, tmp_path):
    bucket = s3_server.new_bucket("warmexit")
    urls, truth = write_synthetic(bucket, 2, 60, seed=43, min_size=10_000, max_size=20_000,
                                  storage_options=s3_server.storage_options)
    cache = tmp_path / "cache"
    fault_proxy.configure(latency_ms=1500)  # the downloads are still running at exit
    code = textwrap.dedent(f"""
        import os
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        from cloudrec.torch import RecordIterableDataset
        ds = RecordIterableDataset({urls!r}, decode=bytes, storage_options={fault_proxy.storage_options!r},
                                   batch_size=8, fetch_options={{"cache": "auto", "cache_dir": {str(cache)!r}}})
        print(ds.warm_cache(2), flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    fault_proxy.configure()
    ds = open_dataset(urls, storage_options=s3_server.storage_options)
    f = RecordFetcher(ds, cache="shards", cache_dir=str(cache))
    got = dict(f.fetch(range(len(ds))))
    assert len(got) == 120
    for rid, payload in got.items():
        assert bytes(payload) == truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))]
    f.close()
