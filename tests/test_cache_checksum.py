"""A shard-cache download checks the checksum S3 keeps for the object: bytes changed on the
way (the fault proxy inverts one) are never published, and records already streamed from
them make the fetch fail instead of passing as good.  A whole-object read botocore checks
itself (an `.idx`) is read again."""
import base64
import gc
import hashlib
import os
import threading
import zlib
from concurrent.futures import Future

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import ChecksumMismatchError
from cloudrec.reader.cached import CacheHook
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.cache import ShardCache
from cloudrec.storage.cache_download import download_ranges
from cloudrec.storage.stored_checksum import (StoredChecksum, covers_whole, from_response,
                                               native_available)

DATA = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _crc_b64(data: bytes) -> str:
    return _b64(zlib.crc32(data).to_bytes(4, "big"))


def test_the_stored_value_is_read_from_a_whole_object_answer_only():
    crc = _crc_b64(DATA)
    assert from_response({"ChecksumCRC32": crc, "ChecksumType": "FULL_OBJECT"}).algorithm == "crc32"
    assert from_response({"ChecksumSHA256": "x"}).algorithm == "sha256"
    assert from_response({"ChecksumSHA1": "x"}).algorithm == "sha1"
    assert from_response({}) is None
    assert from_response({"ChecksumCRC32": "abc=-12"}) is None           # a multipart composite
    assert from_response({"ChecksumCRC32": crc, "ChecksumType": "COMPOSITE"}) is None
    native = from_response({"ChecksumCRC64NVME": "AAAAAAAAAAA="})   # awscrt (the crt extra)
    assert (native.algorithm if native else None) == ("crc64nvme" if native_available() else None)
    assert covers_whole("bytes 0-99/100", 0, 100) and covers_whole("", 0, 100)
    assert not covers_whole("bytes 0-99/200", 0, 100) and not covers_whole("bytes 5-99/100", 5, 100)


# the catalogue's check values (the CRC of b"123456789"): CRC-64/NVME and CRC-32C
CHECK_VALUES = {"crc64nvme": (0xAE8B14860A799888, 8), "crc32c": (0xE3069283, 4)}


def _native_b64(algorithm: str, data: bytes) -> str:
    st = StoredChecksum(algorithm, "")
    st.update(data)
    return _b64(st._crc.to_bytes(CHECK_VALUES[algorithm][1], "big"))


@pytest.mark.parametrize("algorithm", sorted(CHECK_VALUES))
def test_native_checksums_give_the_catalogue_check_values(algorithm):
    if not native_available():
        pytest.skip("awscrt (the crt extra) is not installed")
    value, width = CHECK_VALUES[algorithm]
    st = StoredChecksum(algorithm, _b64(value.to_bytes(width, "big")))
    for piece in (b"1234", memoryview(b"56789")):   # fed in pieces, as a download streams
        st.update(piece)
    st.check(None, "s3://b/x.rec", 9)


@pytest.mark.parametrize("algorithm", ["crc32", "sha1", "sha256", "crc64nvme", "crc32c"])
def test_a_check_passes_on_the_bytes_and_fails_on_one_byte_changed(algorithm):
    if algorithm in CHECK_VALUES and not native_available():
        pytest.skip("awscrt (the crt extra) is not installed")
    good = _crc_b64(DATA) if algorithm == "crc32" else _native_b64(algorithm, DATA) \
        if algorithm in CHECK_VALUES else _b64(hashlib.new(algorithm, DATA).digest())
    bad = DATA[:1000] + bytes([DATA[1000] ^ 1]) + DATA[1001:]
    for data, ok in ((DATA, True), (bad, False)):
        st = StoredChecksum(algorithm, good)
        for i in range(0, len(data), 65536):
            st.update(data[i:i + 65536])
        if ok:
            st.check(zlib.crc32(data), "s3://b/x.rec", len(data))
        else:
            with pytest.raises(ChecksumMismatchError) as ei:
                st.check(zlib.crc32(data), "s3://b/x.rec", len(data))
            assert "s3://b/x.rec" in str(ei.value) and algorithm.upper() in str(ei.value)


def _stream_of(data: bytes, stored: str, log: list):
    """A stream function over ``data`` whose whole-object GETs report ``stored`` (CRC32)."""
    def stream(a, b, sink, on_checksum=None):
        log.append((a, b))
        if on_checksum is not None and a == 0 and b == len(DATA):
            on_checksum(StoredChecksum("crc32", stored))
        for i in range(a, b, 50_000):
            sink(i, data[i:min(b, i + 50_000)])
        f: Future = Future()
        f.set_result(None)
        return f
    return stream


def test_a_download_whose_bytes_differ_from_the_stored_checksum_raises(tmp_path):
    log: list = []
    tmp = str(tmp_path / "t")
    ok = download_ranges(None, len(DATA), chunk=len(DATA), first=len(DATA), checked=True,
                         stream=_stream_of(DATA, _crc_b64(DATA), log), url="s3://b/a.rec")
    assert ok(tmp) == zlib.crc32(DATA) and log == [(0, len(DATA))]
    bad = DATA[:7] + bytes([DATA[7] ^ 0xFF]) + DATA[8:]
    dl = download_ranges(None, len(DATA), chunk=len(DATA), first=len(DATA), checked=True,
                         stream=_stream_of(bad, _crc_b64(DATA), log), url="s3://b/a.rec")
    with pytest.raises(ChecksumMismatchError, match="s3://b/a.rec"):
        dl(tmp)
    # pieces out of order (no running CRC): the file is read back for the check
    def shuffled(data):
        def stream(a, b, sink, on_checksum=None):
            on_checksum(StoredChecksum("crc32", _crc_b64(DATA)))
            sink(100_000, data[100_000:b])
            sink(0, data[:100_000])
            sink(b - 1, data[b - 1:b])   # ends where the GET ends
            f: Future = Future()
            f.set_result(None)
            return f
        return download_ranges(None, len(DATA), chunk=len(DATA), first=len(DATA), checked=True,
                               stream=stream, url="s3://b/a.rec")
    assert shuffled(DATA)(tmp) is None   # checked against the file; the cache CRCs it
    with pytest.raises(ChecksumMismatchError):
        shuffled(bad)(tmp)
    # chunks smaller than the object: no GET covers it whole, nothing to check against
    parts = download_ranges(None, len(DATA), chunk=100_000, first=100_000, checked=True,
                            stream=_stream_of(bad, _crc_b64(DATA), log))
    assert parts(tmp) == zlib.crc32(bad)


def test_a_follower_of_a_download_that_failed_its_checksum_hears_of_it(tmp_path):
    """Another process streamed from the temp file: it must not take those records as good."""
    cache = ShardCache(str(tmp_path / "c"))
    url, size, version = "s3://b/train-0.rec", len(DATA), "ETag=1"
    started, release = threading.Event(), threading.Event()

    def failing(tmp, have=()):
        with open(tmp, "r+b") as fh:
            fh.write(DATA)
        started.set()
        release.wait(10)
        raise ChecksumMismatchError("the bytes received do not match", url, 0, size)

    errors = {}

    def run(name, download, follow=None):
        try:
            cache.get(url, size, version, download, follow=follow)
        except ChecksumMismatchError as exc:
            errors[name] = str(exc)

    a = threading.Thread(target=run, args=("a", failing))
    a.start()
    assert started.wait(10)
    followed = []
    b = threading.Thread(target=run, args=("b", lambda tmp, have=(): 1 / 0,
                                           lambda part: followed.append(part) or (lambda: None)))
    b.start()
    while not followed:
        threading.Event().wait(0.01)
    release.set()
    a.join(10)
    b.join(10)
    assert "do not match" in errors["a"]
    assert "the download this process followed failed" in errors["b"] and url in errors["b"]
    assert cache.lookup(url, size, version) is None
    # a later download (not following the failed one) goes ahead and clears the mark
    assert cache.get(url, size, version, lambda tmp, have=(): open(tmp, "r+b").write(DATA) and None)
    assert not [n for n in os.listdir(cache.dir) if n.endswith(".bad")]


def _shards(s3_server, name, n_shards=1, n=40, size=5000):
    bucket = s3_server.new_bucket(name)
    return write_synthetic(bucket, n_shards, n, seed=41, min_size=size * 3 // 5,
                           max_size=size * 7 // 5, storage_options=s3_server.storage_options)


def _fetch_all(ds, cache_dir):
    f = RecordFetcher(ds, cache="shards", cache_dir=cache_dir)
    try:
        return dict(f.fetch(range(len(ds))))
    finally:
        f.close()


@pytest.mark.s3
def test_an_inverted_byte_in_a_streamed_download_fails_the_fetch_and_is_not_cached(
        s3_server, fault_proxy, tmp_path, monkeypatch):
    urls, truth = _shards(s3_server, "flipstream", size=50_000)   # ~2 MB
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    checks = []
    real = StoredChecksum.check
    monkeypatch.setattr(StoredChecksum, "check",
                        lambda self, *a: checks.append(self.algorithm) or real(self, *a))
    cache_dir = str(tmp_path / "c")
    # ~2 s for the shard: its first records are surely read while it still downloads
    fault_proxy.configure(pflip=1.0, methods="GET", max_faults=1, mb_per_s=1)
    f = RecordFetcher(ds, cache="shards", cache_dir=cache_dir)
    with pytest.raises(ChecksumMismatchError) as ei:
        dict(f.fetch(range(len(ds))))
    assert fault_proxy.stats()["flip"] == 1 and checks == ["crc32"]
    assert urls[0] in str(ei.value) and "streamed from those bytes" in str(ei.value)
    sh = ds.shards[0]
    assert ShardCache(cache_dir).lookup(sh.rec_url, sh.size, sh.version) is None
    fault_proxy.configure()
    got = dict(f.fetch(range(len(ds))))   # the same fetcher: downloaded again, checked, right
    f.close()
    assert got == {r: truth[(0, int(ds.table.key[r]))] for r in range(len(ds))}
    assert checks == ["crc32", "crc32"]
    assert fault_proxy.traffic()["GET .rec"]["requests"] == 1
    assert ShardCache(cache_dir).lookup(sh.rec_url, sh.size, sh.version) is not None


@pytest.mark.s3
def test_without_streaming_a_corrupted_download_is_fetched_again(s3_server, fault_proxy,
                                                                 tmp_path, monkeypatch):
    """No record was handed over from the bad bytes: the download is repeated once."""
    monkeypatch.setattr(CacheHook, "stream", False)
    urls, truth = _shards(s3_server, "flipwhole", n_shards=2)
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    fault_proxy.configure(pflip=1.0, methods="GET", max_faults=1)
    got = _fetch_all(ds, str(tmp_path / "c"))
    assert got == {r: truth[(int(ds.table.shard[r]), int(ds.table.key[r]))] for r in range(len(ds))}
    assert fault_proxy.stats()["flip"] == 1
    assert fault_proxy.traffic()["GET .rec"]["requests"] == 3   # 2 shards, one fetched twice


@pytest.mark.s3
def test_dataloader_workers_sharing_a_corrupted_download_fail_the_epoch(s3_server, fault_proxy,
                                                                        tmp_path):
    torch = pytest.importorskip("torch")
    from cloudrec.torch import RecordIterableDataset
    urls, truth = _shards(s3_server, "flipworkers", n=80, size=30_000)   # ~2.4 MB
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    rds = RecordIterableDataset(ds, decode=bytes, collate=list, batch_size=8, mode="block",
                                seed=1, rank=0, world_size=1,
                                fetch_options={"cache": "shards", "cache_dir": str(tmp_path / "c")})
    loader = torch.utils.data.DataLoader(rds, batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    # ~2.4 s for the shard: both workers read records from it while it downloads
    fault_proxy.configure(pflip=1.0, methods="GET", max_faults=1, mb_per_s=1)
    it = iter(loader)
    with pytest.raises(Exception) as ei:
        for _ in it:
            pass
    msg = str(ei.value)
    del it, ei        # (the traceback holds the iterator) its workers end now
    gc.collect()
    assert "do not match the object's stored CRC32" in msg and urls[0] in msg
    fault_proxy.configure()
    rds.set_epoch(1)
    seen = {}
    for b in loader:
        seen.update(zip(b["ids"].tolist(), b["data"]))
    assert seen == {r: truth[(0, int(ds.table.key[r]))] for r in range(len(ds))}


@pytest.mark.s3
def test_an_index_whose_bytes_fail_botocores_check_is_read_again(s3_server, fault_proxy):
    urls, truth = _shards(s3_server, "flipidx")
    fault_proxy.configure(pflip=1.0, methods="GET", max_faults=1)
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    assert fault_proxy.stats()["flip"] == 1
    assert fault_proxy.traffic()["GET .idx"]["requests"] == 2
    assert sorted(int(k) for k in ds.table.key) == sorted(k for _, k in truth)


@pytest.mark.s3
@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32C"])
def test_objects_stored_with_crc64nvme_or_crc32c_are_checked(s3_server, fault_proxy, tmp_path,
                                                              monkeypatch, algorithm):
    """S3 stores CRC64NVME for an object uploaded without a checksum (AWS's CLI and other
    tools send it too): a cache download checks it as it checks CRC32."""
    if not native_available():
        pytest.skip("awscrt (the crt extra) is not installed")
    import boto3
    so = s3_server.storage_options
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=so["key"],
                          aws_secret_access_key=so["secret"], region_name="us-east-1")
    bucket = s3_server.new_bucket("native" + algorithm.lower())

    def put(url: str, data: bytes) -> None:
        client.put_object(Bucket=bucket[5:], Key=url[len(bucket) + 1:], Body=data,
                          ChecksumAlgorithm=algorithm)
    urls, truth = write_synthetic(bucket, 1, 40, seed=43, min_size=3000, max_size=7000, put=put)
    head = client.head_object(Bucket=bucket[5:], Key=urls[0][len(bucket) + 1:],
                              ChecksumMode="ENABLED")
    assert f"Checksum{algorithm}" in head   # the value the download will be checked against
    ds = open_dataset(urls, storage_options=fault_proxy.storage_options)
    checks = []
    real = StoredChecksum.check
    monkeypatch.setattr(StoredChecksum, "check",
                        lambda self, *a: checks.append(self.algorithm) or real(self, *a))
    fault_proxy.configure(pflip=1.0, methods="GET", targets="GET .rec", max_faults=1)
    monkeypatch.setattr(CacheHook, "stream", False)   # no record handed over from bad bytes
    got = _fetch_all(ds, str(tmp_path / "c"))
    assert got == {r: truth[(0, int(ds.table.key[r]))] for r in range(len(ds))}
    assert fault_proxy.stats()["flip"] == 1 and checks == [algorithm.lower()] * 2
    assert fault_proxy.traffic()["GET .rec"]["requests"] == 2   # refused once, then cached
    sh = ds.shards[0]
    assert ShardCache(str(tmp_path / "c")).lookup(sh.rec_url, sh.size, sh.version) is not None
