"""Reads are pinned to the ETag each shard had at open (loopback S3): an object replaced
mid-epoch by one of the same size is an ObjectChangedError naming it, never records of
the new version under the old index; a cache download of a replaced object is refused
(nothing cached under the old version), and a reopened dataset caches the new one."""
import os

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.ranged import etag_of
from cloudrec.storage.retry import ObjectChangedError

pytestmark = pytest.mark.s3


def _same_size_replacement(fs, url, ds, shard_no):
    """Rewrite every payload byte of a shard (framing kept): same size, new content/ETag."""
    path = url[len("s3://"):]
    raw = bytearray(fs.cat_file(path))
    t = ds.table
    for rid in np.flatnonzero(t.shard == shard_no).tolist():
        a = int(t.offset[rid]) + 8  # after magic + length word
        b = int(t.offset[rid] + t.length[rid])
        raw[a:b] = bytes(x ^ 0x5A for x in raw[a:b])
    fs.pipe_file(path, bytes(raw))
    return bytes(raw)


def test_etag_of_version_tags():
    assert etag_of('ETag=abc123') == "abc123" and etag_of('ETag="q"') == "q"
    assert etag_of("mtime=1700000000.0") is None and etag_of("") is None and etag_of(None) is None


def test_object_replaced_mid_epoch_is_a_clear_error(s3_server):
    so = s3_server.storage_options
    bucket = s3_server.new_bucket("replace")
    urls, truth = write_synthetic(bucket, 2, 200, seed=61, min_size=200, max_size=800,
                                  storage_options=so)
    ds = open_dataset(urls, storage_options=so)
    assert all(s.version.startswith("ETag=") for s in ds.shards)
    f = RecordFetcher(ds, max_gap=-1, window_bytes=4096, readahead_bytes=8192)
    order = np.concatenate([np.arange(0, 200), np.arange(200, 400)])  # shard 0, then shard 1
    got = []
    fs = s3_server.filesystem()
    with pytest.raises(ObjectChangedError) as ei:
        for rid, payload in f.fetch(order):
            got.append((rid, payload))
            if len(got) == 100:
                _same_size_replacement(fs, urls[1], ds, 1)
    msg = str(ei.value)
    assert urls[1] in msg and "changed since the dataset was opened" in msg and "reopen" in msg
    # what came before the error is the old, right data; nothing of the new version slipped in
    assert len(got) >= 100
    for rid, payload in got:
        assert payload == truth[(int(ds.table.shard[rid]), int(ds.table.key[rid]))], rid
    # shard 0 is untouched and still reads; a reopened dataset reads the new version
    assert [p for _, p in f.fetch([0, 5])] == [truth[(0, 0)], truth[(0, 5)]]
    f.close()
    ds2 = open_dataset(urls, storage_options=so)
    assert ds2.shards[1].version != ds.shards[1].version
    with RecordFetcher(ds2) as g:
        rid, payload = next(iter(g.fetch([250])))
        assert payload == bytes(x ^ 0x5A for x in truth[(1, 250)])


def test_object_replaced_before_its_cache_download_is_refused(s3_server, tmp_path):
    so = s3_server.storage_options
    bucket = s3_server.new_bucket("replcache")
    urls, truth = write_synthetic(bucket, 2, 50, seed=62, min_size=200, max_size=800,
                                  storage_options=so)
    ds = open_dataset(urls, storage_options=so)
    new1 = _same_size_replacement(s3_server.filesystem(), urls[1], ds, 1)
    cdir = str(tmp_path / "cache")
    f = RecordFetcher(ds, cache="shards", cache_dir=cdir)
    assert [p for _, p in f.fetch(range(50))] == [truth[(0, k)] for k in range(50)]
    with pytest.raises(ObjectChangedError, match=urls[1].replace("/", ".")):
        list(f.fetch([60]))
    entries = f._cache.cache.entries()
    assert [e.url for e in entries] == [urls[0]]  # the replaced shard was not cached
    assert not [n for n in os.listdir(cdir) if ".tmp." in n]
    f.close()
    # reopened: the new version is downloaded and cached under its own ETag
    ds2 = open_dataset(urls, storage_options=so)
    with RecordFetcher(ds2, cache="shards", cache_dir=cdir) as g:
        assert list(g.fetch([60]))[0][1] == bytes(x ^ 0x5A for x in truth[(1, 60)])
        e1 = [e for e in g._cache.cache.entries() if e.url == urls[1]]
        assert len(e1) == 1 and e1[0].version == ds2.shards[1].version
        with open(e1[0].path, "rb") as fh:
            assert fh.read() == new1
