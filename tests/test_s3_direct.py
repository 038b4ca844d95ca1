"""Presigned direct S3 GETs (cloudrec.storage.s3_direct) on loopback moto: the same bytes
as s3fs, pinned, mapped errors without the signature, the fallbacks.

The fault, outage and consistency suites (test_fetch_faults, test_fetch_outage,
test_fetch_consistency) run through this path too, as it is the default."""
from __future__ import annotations

import traceback

import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage import s3_direct
from cloudrec.storage.fs import resolve
from cloudrec.storage.ranged import make_range_reader
from cloudrec.storage.retry import ObjectChangedError, RetryPolicy
from cloudrec.storage.stream_read import stream_range

pytestmark = pytest.mark.s3

BLOB = bytes(range(256)) * 4096   # 1 MiB with a recognisable pattern


@pytest.fixture(scope="module")
def blob(s3_server):
    bucket = s3_server.new_bucket("direct")
    fs, path = resolve(bucket + "/blob.bin", s3_server.storage_options)
    fs.pipe(path, BLOB)
    return bucket + "/blob.bin"


def _counting_botocore_gets(fs, monkeypatch):
    """Count GetObject calls made through s3fs (the direct path makes none)."""
    calls = []
    real = type(fs)._call_s3

    async def counting(self, method, *a, **kw):
        if method == "get_object":
            calls.append(kw.get("Range"))
        return await real(self, method, *a, **kw)
    monkeypatch.setattr(type(fs), "_call_s3", counting)
    return calls


def test_ranges_are_the_bytes_s3fs_reads_without_a_botocore_get(s3_server, blob, monkeypatch):
    fs, path = resolve(blob, s3_server.storage_options)
    version = "ETag=" + fs.info(path)["ETag"].strip('"')
    reader = make_range_reader(fs, concurrency=4, retry=RetryPolicy(max_attempts=2))
    calls = _counting_botocore_gets(reader.fs, monkeypatch)
    ranges = [(0, 1), (0, len(BLOB)), (4095, 4097), (1000, 300_000), (len(BLOB) - 7, len(BLOB))]
    for a, b in ranges:
        assert reader.submit(path, a, b, blob).result() == BLOB[a:b]
        assert reader.submit(path, a, b, blob, version=version).result() == BLOB[a:b]
    pieces = []
    stream_range(reader, path, 10, 700_000, lambda off, d: pieces.append((off, d)), blob,
                 version).result()
    assert b"".join(d for _, d in pieces) == BLOB[10:700_000]
    assert [off for off, _ in pieces][0] == 10 and len(pieces) > 1   # handed over in pieces
    assert calls == []   # none of it went through botocore's GetObject
    reader.close()


def test_switched_off_and_extra_request_parameters_use_s3fs(s3_server, blob, monkeypatch):
    fs, path = resolve(blob, s3_server.storage_options)
    assert s3_direct.enabled_for(fs)
    monkeypatch.setenv("CLOUDREC_S3_DIRECT", "0")
    assert not s3_direct.enabled_for(fs)
    reader = make_range_reader(fs, concurrency=2)
    calls = _counting_botocore_gets(reader.fs, monkeypatch)
    assert reader.submit(path, 5, 50, blob).result() == BLOB[5:50]
    assert calls == ["bytes=5-49"]
    monkeypatch.delenv("CLOUDREC_S3_DIRECT")
    payer, _ = resolve(blob, dict(s3_server.storage_options, requester_pays=True))
    sse, _ = resolve(blob, dict(s3_server.storage_options,
                                s3_additional_kwargs={"SSECustomerAlgorithm": "AES256"}))
    assert not s3_direct.enabled_for(payer) and not s3_direct.enabled_for(sse)
    reader.close()


def test_a_client_without_the_internals_falls_back_once(s3_server, blob, monkeypatch):
    fs, path = resolve(blob, dict(s3_server.storage_options, skip_instance_cache=True))
    reader = make_range_reader(fs, concurrency=2)
    monkeypatch.setattr(s3_direct, "_http_session", lambda client: None)
    calls = _counting_botocore_gets(reader.fs, monkeypatch)
    assert reader.submit(path, 0, 10, blob).result() == BLOB[:10]
    assert reader.submit(path, 10, 20, blob).result() == BLOB[10:20]
    assert calls == ["bytes=0-9", "bytes=10-19"]
    assert not s3_direct.enabled_for(reader.fs)   # decided once for this client
    _unmark(reader.fs)
    reader.close()


def _unmark(fs) -> None:
    """Forget a fallback decision: the client is shared (memoised per storage options) with
    the tests that follow."""
    vars(fs.s3).pop("_cloudrec_direct_ok", None)


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_errors_name_the_object_never_the_signature(s3_server, blob):
    fs, path = resolve(blob, s3_server.storage_options)
    reader = make_range_reader(fs, concurrency=2, retry=RetryPolicy(max_attempts=2))
    missing = blob[:-len("blob.bin")] + "nothere.bin"
    with pytest.raises(StorageError) as ei:
        reader.submit(path.replace("blob.bin", "nothere.bin"), 0, 10, missing).result()
    assert isinstance(ei.value, FileNotFoundError)
    assert missing in str(ei.value) and "404" in str(ei.value)
    with pytest.raises(StorageError) as er:   # past the end: S3's 416, not retried
        reader.submit(path, len(BLOB) + 10, len(BLOB) + 20, blob).result()
    assert "416" in str(er.value) and blob in str(er.value)
    assert "1 attempt" in str(er.value) or "read failed" in str(er.value)
    for exc in (ei.value, er.value):
        text = _all_text(exc)
        assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text
        assert "Signature=" not in text
    reader.close()


def test_a_replaced_object_is_refused(s3_server):
    bucket = s3_server.new_bucket("direct-pin")
    urls, _ = write_synthetic(bucket, 1, 40, seed=3, min_size=500, max_size=900,
                              storage_options=s3_server.storage_options)
    ds = open_dataset(urls, storage_options=s3_server.storage_options)
    fs, path = resolve(urls[0], s3_server.storage_options)
    data = fs.cat(path)
    fs.pipe(path, data[::-1][:len(data)])    # same size, other bytes: a new ETag
    f = RecordFetcher(ds, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    with pytest.raises(ObjectChangedError) as ei:
        list(f.fetch([5]))
    assert urls[0] in str(ei.value)
    f.close()


def test_dropped_and_cut_answers_are_retried(fault_proxy, blob):
    fault_proxy.configure(seed=4, methods="GET", pdrop=0.3, ptrunc=0.3)
    fs, path = resolve(blob, dict(fault_proxy.storage_options, skip_instance_cache=True))
    policy = RetryPolicy(max_attempts=20, base_delay=0.01, max_delay=0.05, timeout=5.0, seed=1)
    reader = make_range_reader(fs, concurrency=4, retry=policy)
    futures = [reader.submit(path, a, a + 50_000, blob) for a in range(0, 1_000_000, 50_000)]
    assert b"".join(f.result() for f in futures) == BLOB[:1_000_000]
    st = fault_proxy.stats()
    # a body cut short is retried by the policy (from where it broke, when streamed); a
    # connection dropped before any answer may also be re-sent once by aiohttp itself
    assert st["trunc"] >= 3 and st["drop"] >= 3 and policy.retries >= st["trunc"], st
    reader.close()


def test_a_refused_presigned_get_falls_back_to_s3fs(fault_proxy, blob, monkeypatch):
    """A 403 to the presigned GET (say a bucket policy denying query-string auth) sends
    this client's reads through s3fs from then on; a 403 there too is the error."""
    fault_proxy.configure(methods="GET", p403=1.0, max_faults=1)
    fs, path = resolve(blob, dict(fault_proxy.storage_options, skip_instance_cache=True))
    reader = make_range_reader(fs, concurrency=2, retry=RetryPolicy(max_attempts=2))
    calls = _counting_botocore_gets(reader.fs, monkeypatch)
    assert reader.submit(path, 100, 200, blob).result() == BLOB[100:200]
    assert fault_proxy.stats()["403"] == 1 and calls == ["bytes=100-199"]
    assert not s3_direct.enabled_for(reader.fs)
    pieces = []
    stream_range(reader, path, 0, 5000, lambda off, d: pieces.append(d), blob).result()
    assert b"".join(pieces) == BLOB[:5000] and len(calls) == 2   # streamed through s3fs too
    fault_proxy.configure(methods="GET", p403=1.0)
    with pytest.raises(StorageError) as ei:
        reader.submit(path, 0, 10, blob).result()
    assert "access denied" in str(ei.value).lower() and blob in str(ei.value)
    _unmark(reader.fs)
    reader.close()


def test_cache_downloads_keep_botocores_checksummed_get(s3_server, tmp_path, monkeypatch):
    """A cache download becomes an entry other processes trust: it stays on botocore's
    GetObject (which checks the stored checksum S3 sends); record reads go direct."""
    bucket = s3_server.new_bucket("direct-cache")
    urls, truth = write_synthetic(bucket, 2, 30, seed=5, min_size=300, max_size=700,
                                  storage_options=s3_server.storage_options)
    opts = dict(s3_server.storage_options, skip_instance_cache=True)
    ds = open_dataset(urls, storage_options=opts)
    f = RecordFetcher(ds, cache="shards", cache_dir=str(tmp_path / "c"))
    calls = _counting_botocore_gets(ds.filesystem(0)[0], monkeypatch)
    got = dict(f.fetch(range(len(ds))))
    f.close()
    assert len(got) == 60 and all(
        got[r] == truth[(int(ds.table.shard[r]), int(ds.table.key[r]))] for r in got)
    assert len(calls) == 2   # one download GET per shard, through botocore
    g = RecordFetcher(open_dataset(urls, storage_options=opts))
    calls.clear()
    assert dict(g.fetch(range(len(ds)))) == got and calls == []   # uncached: direct
    g.close()


def test_anonymous_reads_of_a_public_object(s3_server, monkeypatch):
    """anon=True: the presigned URL is the plain URL (no signature), and works as before."""
    bucket = s3_server.new_bucket("direct-anon")
    fs, path = resolve(bucket + "/pub.bin", s3_server.storage_options)
    fs.pipe(path, BLOB[:10_000])
    fs.chmod(path, acl="public-read")
    anon, apath = resolve(bucket + "/pub.bin", {"anon": True, "client_kwargs":
                                               s3_server.storage_options["client_kwargs"]})
    reader = make_range_reader(anon, concurrency=2, retry=RetryPolicy(max_attempts=2))
    calls = _counting_botocore_gets(reader.fs, monkeypatch)
    assert reader.submit(apath, 123, 4567, bucket + "/pub.bin").result() == BLOB[123:4567]
    assert calls == [] and s3_direct.enabled_for(reader.fs)
    reader.close()


def test_a_presigned_url_serves_an_objects_gets_for_a_minute(s3_server, blob, monkeypatch):
    fs, path = resolve(blob, dict(s3_server.storage_options, skip_instance_cache=True,
                                  default_block_size=5 << 20))   # a client of its own
    reader = make_range_reader(fs, concurrency=2)
    assert reader.submit(path, 0, 10, blob).result() == BLOB[:10]
    client = reader.fs.s3
    signs = []
    real = client.generate_presigned_url

    async def counting(*a, **kw):
        signs.append(kw["Params"]["Key"])
        return await real(*a, **kw)
    monkeypatch.setattr(client, "generate_presigned_url", counting)
    for a in (10, 20, 30):
        assert reader.submit(path, a, a + 10, blob).result() == BLOB[a:a + 10]
    assert signs == []                         # the first GET's URL, reused
    monkeypatch.setattr(s3_direct, "REUSE_SECONDS", 0.0)
    assert reader.submit(path, 40, 50, blob).result() == BLOB[40:50]
    assert signs == ["blob.bin"]               # past its reuse time: signed anew
    reader.close()
