"""Progressive shard streaming (loopback S3 behind the proxy): while a shard downloads into
the node's cache, its records are handed out as their bytes land (each GET is streamed),
before the entry is published; the shard is fetched once (every byte once, counted at the
proxy), the entry is published whole with its CRC32, and the next reader hits it."""
import os
import zlib

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.cache import ShardCache
from cloudrec.storage.cache_download import PIECE, chunk_bounds

pytestmark = pytest.mark.s3


def test_chunk_bounds_cover_exactly():
    mb = 1 << 20
    assert chunk_bounds(0) == [] and chunk_bounds(5) == [(0, 5)]
    # streamed GETs need no small first chunk: equal 16 MB chunks
    assert chunk_bounds(40 * mb) == [(0, 16 * mb), (16 * mb, 32 * mb), (32 * mb, 40 * mb)]
    b = chunk_bounds(20 * mb + 7, 8 * mb, mb)       # the doubling plan, when asked for
    assert [y - x for x, y in b] == [mb, 2 * mb, 4 * mb, 8 * mb, 5 * mb + 7]
    assert b[0][0] == 0 and all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
    assert b[-1][1] == 20 * mb + 7


def _gets_and_bytes(proxy):
    t = proxy.traffic().get("GET .rec", {"requests": 0, "bytes": 0})
    return t["requests"], t["bytes"]


def test_records_stream_while_the_shard_downloads(s3_server, fault_proxy, tmp_path):
    bucket = s3_server.new_bucket("stream")
    urls, truth = write_synthetic(bucket, 1, 400, seed=81, min_size=45_000, max_size=55_000,
                                  magic_every=0, storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    size = ds.shards[0].size
    assert len(chunk_bounds(size)) == 2
    # a 20 MB shard over a 10 MB/s link: its streamed GETs last about 1-2 s
    fault_proxy.configure(latency_ms=50, mb_per_s=10)
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
    assert _gets_and_bytes(fault_proxy) == (2, size)  # one GET per chunk, each byte once
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


def test_a_record_does_not_wait_for_the_end_of_its_request(s3_server, fault_proxy, tmp_path):
    """The fetcher merges a shard's records into one request of up to 16 MB: each record
    is handed over once its own bytes are written, not once the request's last byte is."""
    bucket = s3_server.new_bucket("streamreq")
    urls, truth = write_synthetic(bucket, 1, 200, seed=82, min_size=45_000, max_size=55_000,
                                  magic_every=0, storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    size = ds.shards[0].size
    fault_proxy.configure(latency_ms=20, mb_per_s=5)   # the ~10 MB shard takes ~2 s
    f = RecordFetcher(ds, cache="shards", cache_dir=str(tmp_path / "c"))
    got, written_at_first = [], None
    for rid, payload in f.fetch(range(len(ds))):
        if not got:
            prog = f._cache._progress[0]
            with prog._lock:   # the written run from offset 0
                written_at_first = prog.done[0][1] if prog.done and prog.done[0][0] == 0 else 0
        got.append((rid, payload))
    requests = f.stats["requests"]
    f.close()
    assert requests == 1                          # one request spans the whole shard
    assert written_at_first < size // 2           # its first record came long before its end
    assert got == [(r, truth[(0, int(ds.table.key[r]))]) for r in range(len(ds))]


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
    fault_proxy.configure(latency_ms=200, mb_per_s=5)  # a ~4 s download: a wide margin on a busy machine
    barrier.wait(timeout=60)
    res = sorted(q.get(timeout=180) for _ in ps)
    for p in ps:
        p.join(30)
    # one download per node: one GET per chunk, each byte once
    assert _gets_and_bytes(fault_proxy) == (len(chunk_bounds(size)), size)
    (_, first, pub1, sha1), (_, second, pub2, sha2) = res
    assert (first["cache_downloads"], second["cache_downloads"]) == (1, 0), (first, second)
    assert second["cache_hits"] == 1 and second["cache_streamed"] > 0, second
    assert pub1 == [] and pub2 == []  # both had records before the entry was published
    want = {r: hashlib.sha256(truth[(0, r)]).hexdigest() for r in range(400)}
    assert sha1 == want and sha2 == want
    assert not [n for n in os.listdir(cdir) if n.endswith(".part") or ".tmp." in n]


def test_download_fetches_the_chunks_readers_wait_for_first(tmp_path):
    """download_ranges: a wanted chunk starts first, in a slot of its own; the rest follows
    in file order once no wanted chunk is in flight; one GET per chunk, every byte once."""
    from concurrent.futures import Future

    from cloudrec.storage.cache_download import download_ranges
    mb = 1 << 20
    size = 60 * mb + 5
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    bounds = chunk_bounds(size, 8 * mb, 8 * mb)
    asked, spans = [], []

    def stream(a, b, sink):
        asked.append((a, b))
        for x in range(a, b, 100_000):   # pieces of any size, as a socket hands them over
            sink(x, data[x:min(b, x + 100_000)])
        f = Future()
        f.set_result(None)
        return f
    wants = iter([[(size - 10, size - 5)], [], [3 * mb + 7]])
    dl = download_ranges(None, size, chunk=8 * mb, first=8 * mb,
                         on_chunk=lambda a, b: spans.append((a, b)),
                         wants=lambda: next(wants, []), stream=stream)
    tmp = str(tmp_path / "x.tmp")
    crc = dl(tmp)
    with open(tmp, "rb") as fh:
        assert fh.read() == data
    # checksummed from the streamed pieces of 8 GETs that finished out of file order
    assert crc == zlib.crc32(data)
    assert asked[0] == bounds[-1]                         # the wanted one first
    assert sorted(asked) == bounds                        # one GET per chunk
    done = sorted(spans)
    assert all(done[i][1] == done[i + 1][0] for i in range(len(done) - 1))
    assert done[0][0] == 0 and done[-1][1] == size        # every byte reported once
    assert all(a % PIECE == 0 and (b % PIECE == 0 or b == size) for a, b in spans)


def test_crc32_combine_matches_zlib_over_the_joined_bytes():
    from cloudrec.storage.cache_files import crc32_combine
    rng = np.random.default_rng(5)
    for n1, n2 in [(0, 0), (0, 7), (7, 0), (1, 1), (300, 3), (3, 100_001), (1 << 20, 12_345)]:
        a, b = rng.bytes(n1), rng.bytes(n2)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b), (n1, n2)


def test_a_download_stream_out_of_order_is_an_error_not_a_wrong_checksum(tmp_path):
    """Pieces must come in order (the stream contract): one handing them back to front is
    refused, so no CRC of misordered bytes can reach a cache entry."""
    from concurrent.futures import Future

    from cloudrec.errors import StorageError
    from cloudrec.storage.cache_download import download_ranges
    data = np.random.default_rng(1).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()

    def backwards(a, b, sink):
        for x in reversed(range(a, b, 250_000)):
            sink(x, data[x:min(b, x + 250_000)])
        f = Future()
        f.set_result(None)
        return f
    dl = download_ranges(None, len(data), chunk=1 << 20, first=1 << 20, stream=backwards)
    with pytest.raises(StorageError, match="ended at"):
        dl(str(tmp_path / "z.tmp"))


def test_a_failed_download_get_fails_the_download_and_cancels_the_rest(tmp_path):
    from concurrent.futures import Future

    from cloudrec.errors import StorageError
    from cloudrec.storage.cache_download import download_ranges
    pending = []

    def stream(a, b, sink):
        f = Future()
        if a == 0:
            f.set_exception(StorageError("read failed: reset", "s3://b/x.rec", a, b))
        else:
            pending.append(f)
        return f
    dl = download_ranges(None, 40 << 20, chunk=8 << 20, stream=stream)
    with pytest.raises(StorageError, match="reset"):
        dl(str(tmp_path / "y.tmp"))
    assert pending and all(f.cancelled() for f in pending)


def test_a_record_deep_in_a_shard_does_not_wait_for_the_bytes_before_it(s3_server, fault_proxy,
                                                                         tmp_path):
    bucket = s3_server.new_bucket("deep")
    urls, truth = write_synthetic(bucket, 1, 900, seed=83, min_size=50_000, max_size=60_000,
                                  magic_every=0, storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    size = ds.shards[0].size
    fault_proxy.configure(latency_ms=100, mb_per_s=10)  # ~5 s for the whole 50 MB shard
    last = len(ds) - 1
    cdir = str(tmp_path / "c")
    with RecordFetcher(ds, cache="shards", cache_dir=cdir, concurrency=1) as f:
        got = f.fetch([last, 0])
        rid, payload = next(got)
        gets_at_first = fault_proxy.stats()["requests"]
        published_at_first = [n for n in os.listdir(cdir) if n.endswith(".data")]
        rest = list(got)
        st = f.stats
    assert rid == last and payload == truth[(0, int(ds.table.key[last]))]
    # in file order the last record needs every byte before it; wanted first, its chunk
    # came first, while the rest of the shard was still to come
    assert gets_at_first <= 2 < len(chunk_bounds(size)) and published_at_first == []
    assert [r for r, _ in rest] == [0] and st["cache_downloads"] == 1
    assert _gets_and_bytes(fault_proxy) == (len(chunk_bounds(size)), size)  # each byte once


def test_progress_and_want_files_round_trip(tmp_path):
    from cloudrec.storage.cache_progress import ProgressFile, ask_for, read_progress
    tmp = tmp_path / ("ab" * 10 + "-" + "cd" * 6 + ".tmp.1.2")
    tmp.write_bytes(b"")
    mb = 1 << 20
    size = 3 * mb + 5
    pf = ProgressFile(str(tmp), size, mb)
    assert read_progress(pf.path) == ([], str(tmp))
    pf.advance(2 * mb, size)          # the last two pieces, the short one included
    pf.advance(0, mb)
    assert read_progress(pf.path) == ([(0, mb), (2 * mb, size)], str(tmp))  # runs
    pf.advance(mb, 2 * mb)
    assert read_progress(pf.path) == ([(0, size)], str(tmp))   # the gap filled: one run
    assert ask_for(pf.want_path, [(5, 9), (size - 1, size)]) and ask_for(pf.want_path, [(7, 8)])
    assert pf.wants() == [(5, 9), (size - 1, size), (7, 8)] and pf.wants() == []
    pf.close()
    os.unlink(pf.want_path)
    assert not ask_for(pf.want_path, [(1, 2)])   # the download ended: nothing to ask
