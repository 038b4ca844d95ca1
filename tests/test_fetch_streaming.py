"""Progressive shard streaming (loopback S3 behind the proxy): while a shard downloads into
the node's cache, its records are handed out as their bytes land, before the entry is
published; the shard is fetched once (its chunk GETs only, no record read twice), the
entry is published whole with its CRC32, and the next reader hits it."""
import os

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.cache import ShardCache
from cloudrec.storage.cache_files import chunk_bounds

pytestmark = pytest.mark.s3


def test_chunk_bounds_start_small_and_cover_exactly():
    assert chunk_bounds(0) == [] and chunk_bounds(5) == [(0, 5)]
    assert chunk_bounds(8 << 20) == [(0, 8 << 20)]  # one chunk: one GET, as before
    mb = 1 << 20
    b = chunk_bounds(20 * mb + 7)
    assert [y - x for x, y in b] == [mb, 2 * mb, 4 * mb, 8 * mb, 5 * mb + 7]
    assert b[0][0] == 0 and all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
    assert b[-1][1] == 20 * mb + 7


def test_records_stream_while_the_shard_downloads(s3_server, fault_proxy, tmp_path):
    bucket = s3_server.new_bucket("stream")
    urls, truth = write_synthetic(bucket, 1, 400, seed=81, min_size=45_000, max_size=55_000,
                                  magic_every=0, storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    size = ds.shards[0].size
    chunks = chunk_bounds(size)
    assert len(chunks) >= 4
    # one chunk GET at a time, each taking >= 0.4 s: the download lasts >= 1.6 s
    fault_proxy.configure(latency_ms=400)
    cdir = str(tmp_path / "cache")
    f = RecordFetcher(ds, cache="shards", cache_dir=cdir, concurrency=1)
    got, published_at_first = [], None
    for rid, payload in f.fetch(range(len(ds))):
        if not got:
            published_at_first = [n for n in os.listdir(cdir) if n.endswith(".data")]
        got.append((rid, payload))
    st = f.stats
    f.close()
    assert published_at_first == []  # the first record came before the shard was complete
    assert [r for r, _ in got] == list(range(400))
    assert all(p == truth[(0, int(ds.table.key[r]))] for r, p in got)
    assert st["cache_downloads"] == 1 and st["cache_streamed"] > 0, st
    assert fault_proxy.stats()["requests"] == len(chunks)  # each byte fetched once
    [entry] = ShardCache(cdir).entries()
    assert entry.size == size and isinstance(entry.crc32, int)
    good, bad = ShardCache(cdir).verify()
    assert len(good) == 1 and bad == []
    # the next reader on the node uses the published entry
    fault_proxy.configure()
    order = np.random.default_rng(3).permutation(len(ds))
    with RecordFetcher(ds, cache="shards", cache_dir=cdir) as g:
        again = list(g.fetch(order))
        assert g.stats["cache_hits"] == 1 and g.stats["cache_downloads"] == 0
    assert [p for _, p in again] == [truth[(0, int(ds.table.key[r]))] for r in order]
    assert fault_proxy.stats()["requests"] == 0


def _stream_epoch(urls, so, cache_dir, barrier, delay, q):
    import hashlib
    import time
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "testing")
    ds = open_dataset(urls, storage_options=so)
    # 1 MB requests: the first record's request lies in the first chunks; a 16 MB request
    # would need chunks that a demand-first download fetches last (just before publishing)
    f = RecordFetcher(ds, cache="shards", cache_dir=cache_dir, concurrency=1,
                      max_request=1 << 20)
    barrier.wait(timeout=60)  # both opened
    barrier.wait(timeout=60)  # the proxy is slowed down and its counts cleared
    time.sleep(delay)
    published_at_first, sha = None, {}
    for rid, payload in f.fetch(range(len(ds))):
        if published_at_first is None:
            published_at_first = [n for n in os.listdir(cache_dir) if n.endswith(".data")]
        sha[rid] = hashlib.sha256(payload).hexdigest()
    q.put((delay, f.stats, published_at_first, sha))
    f.close()


def test_a_second_process_streams_the_download_of_the_first(s3_server, fault_proxy, tmp_path):
    import hashlib
    import multiprocessing as mp
    bucket = s3_server.new_bucket("stream2p")
    urls, truth = write_synthetic(bucket, 1, 400, seed=82, min_size=45_000, max_size=55_000,
                                  magic_every=0, storage_options=s3_server.storage_options)
    size = open_dataset(urls, storage_options=s3_server.storage_options).shards[0].size
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(3), ctx.Queue()
    cdir = str(tmp_path / "cache")
    ps = [ctx.Process(target=_stream_epoch,
                      args=(urls, fault_proxy.storage_options, cdir, barrier, d, q))
          for d in (0.0, 0.3)]  # the second starts while the first is downloading
    for p in ps:
        p.start()
    barrier.wait(timeout=120)
    fault_proxy.configure(latency_ms=1000)  # >= 5 s for the download's chunk GETs: a wide margin on a busy machine
    barrier.wait(timeout=60)
    res = sorted(q.get(timeout=180) for _ in ps)
    for p in ps:
        p.join(30)
    assert fault_proxy.stats()["requests"] == len(chunk_bounds(size))  # one download per node
    (_, first, pub1, sha1), (_, second, pub2, sha2) = res
    assert (first["cache_downloads"], second["cache_downloads"]) == (1, 0), (first, second)
    assert second["cache_hits"] == 1 and second["cache_streamed"] > 0, second
    assert pub1 == [] and pub2 == []  # both had records before the entry was published
    want = {r: hashlib.sha256(truth[(0, r)]).hexdigest() for r in range(400)}
    assert sha1 == want and sha2 == want
    assert not [n for n in os.listdir(cdir) if n.endswith(".part") or ".tmp." in n]


def test_download_fetches_the_chunks_readers_wait_for_first(tmp_path):
    """download_ranges: a wanted offset's chunk takes the next free request slot."""
    from concurrent.futures import Future

    from cloudrec.storage.cache_files import DOWNLOAD_WINDOW, download_ranges
    mb = 1 << 20
    size = 60 * mb + 5
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    bounds = chunk_bounds(size)
    asked, spans = [], []

    def submit(a, b):
        asked.append((a, b))
        f = Future()
        f.set_result(data[a:b])
        return f
    wants = iter([[size - 10], [], [3 * mb]])
    dl = download_ranges(submit, size, on_chunk=lambda a, b: spans.append((a, b)),
                         wants=lambda: next(wants, []))
    tmp = str(tmp_path / "x.tmp")
    dl(tmp)
    with open(tmp, "rb") as fh:
        assert fh.read() == data
    assert sorted(asked) == bounds and sorted(spans) == bounds   # every chunk once
    assert asked[0] == bounds[-1]                                # the wanted one first
    later = bounds.index(next(ab for ab in bounds if ab[0] <= 3 * mb < ab[1]))
    assert asked.index(bounds[later]) <= DOWNLOAD_WINDOW         # next free slot
    assert len(bounds) > DOWNLOAD_WINDOW + 2


def test_a_record_deep_in_a_shard_does_not_wait_for_the_bytes_before_it(s3_server, fault_proxy,
                                                                         tmp_path):
    bucket = s3_server.new_bucket("deep")
    urls, truth = write_synthetic(bucket, 1, 900, seed=83, min_size=50_000, max_size=60_000,
                                  magic_every=0, storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    chunks = chunk_bounds(ds.shards[0].size)
    assert len(chunks) >= 8
    fault_proxy.configure(latency_ms=200)
    last = len(ds) - 1
    with RecordFetcher(ds, cache="shards", cache_dir=str(tmp_path / "c"), concurrency=1) as f:
        got = f.fetch([last, 0])
        rid, payload = next(got)
        gets_at_first = fault_proxy.stats()["requests"]
        rest = list(got)
        st = f.stats
    from cloudrec.storage.cache_files import DOWNLOAD_WINDOW
    assert rid == last and payload == truth[(0, int(ds.table.key[last]))]
    # in file order the last record needs every chunk; wanted first, at most the chunks
    # already in flight come before it
    assert gets_at_first <= DOWNLOAD_WINDOW + 1 < len(chunks)
    assert [r for r, _ in rest] == [0] and st["cache_downloads"] == 1
    assert fault_proxy.stats()["requests"] == len(chunks)      # still each byte once


def test_progress_and_want_files_round_trip(tmp_path):
    from cloudrec.storage.cache_files import ProgressFile, ask_for, read_progress
    tmp = tmp_path / ("ab" * 10 + "-" + "cd" * 6 + ".tmp.1.2")
    tmp.write_bytes(b"")
    size = 30 << 20
    pf = ProgressFile(str(tmp), size, 8 << 20, 1 << 20)
    bounds = chunk_bounds(size)
    assert read_progress(pf.path) == ([], str(tmp))
    pf.advance(*bounds[2])
    pf.advance(*bounds[0])
    assert read_progress(pf.path) == ([bounds[0], bounds[2]], str(tmp))
    assert ask_for(pf.want_path, [5, size - 1]) and ask_for(pf.want_path, [7])
    assert pf.wants() == [5, size - 1, 7] and pf.wants() == []
    pf.close()
    os.unlink(pf.want_path)
    assert not ask_for(pf.want_path, [1])   # the download ended: nothing to ask
