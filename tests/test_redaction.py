"""Secrets never shown: URL passwords and secret storage options are masked in error
messages, reprs, cache metadata files (mode 0600) and `cloudrec cache ls`, checked with a
real http://user:password@ URL through nginx on loopback."""
import os
import stat
import subprocess
import sys
import uuid

import numpy as np
import pytest

import test_storage_backends as suite
from cloudrec.dataset import open_dataset
from cloudrec.errors import CloudrecError, IndexFileError, RecordIOError, StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.fs import resolve
from cloudrec.storage.ranged import make_range_reader
from cloudrec.storage.redact import redact_options, redact_text, redact_url
from cloudrec.storage.retry import ObjectChangedError
from test_storage_nginx import HttpDirStore, nginx  # noqa: F401 - the module's nginx fixture

PASSWORD = "Pa55-w0rd-" + uuid.uuid4().hex[:8]


def test_redact_url_masks_userinfo_and_signing_queries():
    assert redact_url("http://alice:hunter2@h:8080/a/b.rec") == "http://alice:***@h:8080/a/b.rec"
    assert redact_url("https://:tok@h/x") == "https://:***@h/x"
    assert redact_url("https://acct.blob.core.windows.net/c/x.rec?sv=2022&sig=AbC%2Bd&se=1") == \
        "https://acct.blob.core.windows.net/c/x.rec?sv=2022&sig=***&se=1"
    assert redact_url("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA/x&X-Amz-Signature=ff"
                      "&X-Amz-Expires=60") == \
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"
    for same in ("s3://bucket/train-0000.rec", "hdfs://nn:8020/x.rec", "/local/a:b@c.rec",
                 "http://host:8080/path@x", "memory://a/b"):
        assert redact_url(same) == same
    assert redact_url(None) is None


def test_redact_options_nested_and_not_in_place():
    so = {"key": "AKIAEXAMPLE", "secret": "s3cr3t", "token": "t0k",
          "client_kwargs": {"endpoint_url": "http://u:p4ss@127.0.0.1:9000",
                            "region_name": "us-east-1"},
          "config_kwargs": {"retries": {"max_attempts": 3}},
          "credential": {"account_name": "a", "account_key": "k"},
          "account_key": "AzK", "sas_token": "sv=1&sig=x", "password": "pw",
          "session_token": "st", "aws_secret_access_key": "ask", "anon": False,
          "connection_string": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc;",
          "list": [{"api_key": "x"}, "https://h/?token=abc"]}
    out = redact_options(so)
    for k in ("key", "secret", "token", "account_key", "sas_token", "password", "session_token",
              "aws_secret_access_key", "connection_string"):
        assert out[k] == "***", k
    assert out["credential"] == {"account_name": "***", "account_key": "***"}
    assert out["client_kwargs"] == {"endpoint_url": "http://u:***@127.0.0.1:9000",
                                    "region_name": "us-east-1"}
    assert out["config_kwargs"] == {"retries": {"max_attempts": 3}} and out["anon"] is False
    assert out["list"] == [{"api_key": "***"}, "https://h/?token=***"]
    assert so["key"] == "AKIAEXAMPLE" and so["client_kwargs"]["endpoint_url"].endswith("9000")
    text = repr(out)
    for secret in ("AKIAEXAMPLE", "s3cr3t", "p4ss", "AzK", "abc;", "ask"):
        assert secret not in text


def test_redact_text_on_messages_and_reprs():
    msg = ("GET URL('http://u:pw1@h/x.rec') failed; options {'secret': 'pw2', 'anon': True}; "
           "DefaultEndpointsProtocol=https;AccountKey=pw3;EndpointSuffix=x")
    out = redact_text(msg)
    assert "pw1" not in out and "pw2" not in out and "pw3" not in out
    assert "'anon': True" in out and "http://u:***@h/x.rec" in out
    assert redact_text("bad record (s3://b/x.rec, key 5, offset 12)") == \
        "bad record (s3://b/x.rec, key 5, offset 12)"


def test_every_cloudrec_error_masks_the_url():
    url = f"http://bob:{PASSWORD}@127.0.0.1:1/d/x.rec"
    for exc in (StorageError(f"read failed: FileNotFoundError: {url}", url, 0, 10),
                RecordIOError("bad magic", url, 4, key=3), IndexFileError("bad line", url, 2),
                ObjectChangedError("changed", url), CloudrecError(f"cannot open {url}")):
        assert PASSWORD not in str(exc) and PASSWORD not in repr(exc)
        assert "bob:***@127.0.0.1" in str(exc)
        assert PASSWORD not in str(getattr(exc, "url", "") or "")


def _secret_url(store):
    return store.base_url.replace("http://", f"http://reader:{PASSWORD}@", 1)


def test_password_url_through_nginx_never_leaks(nginx, tmp_path, capsys):  # noqa: F811
    sub = f"d-{uuid.uuid4().hex[:8]}"
    plain = HttpDirStore(nginx.root / sub, nginx.url_of(sub))
    urls, truth = suite._write(plain, n_shards=2, per=30, seed=41)
    base = _secret_url(plain)
    secret_urls = [u.replace(plain.base_url, base) for u in urls]
    assert all(PASSWORD in u for u in secret_urls)
    messages = []

    # a real epoch through the password URL, with the shard cache
    ds = open_dataset(secret_urls)
    cdir = tmp_path / "cache"
    f = RecordFetcher(ds, cache="shards", cache_dir=str(cdir))
    order = np.random.default_rng(2).permutation(len(ds))
    suite._check(ds, truth, list(f.fetch(order)), order.tolist())
    assert f.stats["cache_downloads"] == 2
    messages += [repr(f), repr(f._cache.cache), repr(f._reader_for(ds.filesystem(0)[0])),
                 repr(f.retry), repr(ds)]
    f.close()
    # cache files: no password anywhere, metadata owner-only
    names = os.listdir(cdir)
    assert any(n.endswith(".json") for n in names)
    for n in names:
        data = (cdir / n).read_bytes()
        assert PASSWORD.encode() not in data, n
        if n.endswith(".json"):
            assert stat.S_IMODE(os.stat(cdir / n).st_mode) == 0o600, n
            assert b"reader:***@" in data
    from cloudrec.cli import main
    assert main(["cache", "--dir", str(cdir), "ls"]) == 0
    out = capsys.readouterr().out
    assert "2 shard(s)" in out and "reader:***@127.0.0.1" in out and PASSWORD not in out

    # errors: a missing shard, a missing .idx, a range past the end, a damaged record,
    # a shard replaced mid-epoch; none shows the password, each names the (masked) object
    with pytest.raises(StorageError) as ei:
        open_dataset([secret_urls[0], base + "/train-0009.rec"])
    messages.append(str(ei.value))
    assert "train-0009.rec" in str(ei.value)
    with pytest.raises(IndexFileError) as ei:
        open_dataset(secret_urls[0], idx_urls=[base + "/other.idx"])
    messages.append(str(ei.value))
    fs, path = resolve(secret_urls[0])
    with make_range_reader(fs) as r:
        with pytest.raises(StorageError) as ei:
            r.read(path, ds.shards[0].size - 5, ds.shards[0].size + 50, secret_urls[0])
        messages.append(str(ei.value))
    raw = bytearray(plain.get("train-0001.rec"))
    rid = int(np.flatnonzero(ds.table.shard == 1)[4])
    off = int(ds.table.offset[rid])
    magic = bytes(raw[off:off + 4])
    raw[off:off + 4] = b"\0\0\0\0"  # the record's magic word
    plain.put("train-0001.rec", bytes(raw))
    rec_file = plain.root / "train-0001.rec"
    st = os.stat(rec_file)
    os.utime(rec_file, (st.st_atime, st.st_mtime + 100))  # nginx's ETag: mtime (s) + size
    ds2 = open_dataset(secret_urls)
    with pytest.raises(RecordIOError) as ei:
        list(RecordFetcher(ds2).fetch([rid]))
    messages.append(str(ei.value))
    raw[off:off + 4] = magic  # valid again, same size, another ETag
    plain.put("train-0001.rec", bytes(raw))
    os.utime(rec_file, (st.st_atime, st.st_mtime + 200))
    with pytest.raises(ObjectChangedError) as ei:
        list(RecordFetcher(ds2).fetch([rid]))  # ds2 saw the damaged version
    messages.append(str(ei.value))
    assert "train-0001.rec" in str(ei.value) and "changed" in str(ei.value)
    for m in messages:
        assert PASSWORD not in m, m
    assert all("reader:***@" in m for m in messages[5:]), messages[5:]


def test_cli_error_line_hides_the_password(nginx):  # noqa: F811
    url = nginx.url_of(f"none-{uuid.uuid4().hex[:6]}/x.rec").replace(
        "http://", f"http://reader:{PASSWORD}@", 1)
    proc = subprocess.run([sys.executable, "-m", "cloudrec.cli", "inspect", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert PASSWORD not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert "x.rec" in proc.stderr
