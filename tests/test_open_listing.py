"""open_dataset on S3 takes the shards' sizes and versions from one listing of their
folder instead of a HEAD per shard (cloudrec.storage.s3_listing), counted through the
loopback proxy: the same shards as the HEADs give, a bounded listing in a crowded
folder, a refused listing answered by HEADs, a missing shard still named."""
from __future__ import annotations

import pytest
import s3fs

import cloudrec.storage.s3_listing as s3_listing
from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import StorageError
from cloudrec.reader.fetch import RecordFetcher

pytestmark = pytest.mark.s3


def _facts(ds):
    return [(s.rec_url, s.idx_url, s.size, s.version) for s in ds.shards]


def _requests(traffic, kind):
    return traffic.get(kind, {"requests": 0})["requests"]


@pytest.fixture
def folder(s3_server):
    bucket = s3_server.new_bucket()
    urls, truth = write_synthetic(bucket + "/ds", 3, 15, min_size=10, max_size=900, seed=4,
                                  storage_options=s3_server.storage_options)
    return bucket, urls, truth


def test_one_listing_instead_of_a_head_per_shard(folder, fault_proxy, monkeypatch):
    bucket, urls, truth = folder
    so = fault_proxy.storage_options
    ds = open_dataset(urls, storage_options=so)
    t = fault_proxy.traffic()
    assert _requests(t, "GET") == 1 and _requests(t, "HEAD .rec") == 0
    assert _requests(t, "GET .idx") == 3 and _requests(t, "HEAD .idx") == 0
    monkeypatch.setenv("CLOUDREC_S3_LIST", "0")
    fault_proxy.configure()
    heads = open_dataset(urls, storage_options=so)
    t = fault_proxy.traffic()
    assert _requests(t, "HEAD .rec") == 3 and _requests(t, "GET") == 0
    assert _facts(ds) == _facts(heads) and all(s.version.startswith("ETag=") for s in ds.shards)
    with RecordFetcher(ds) as f:   # the versions pin the ranged reads: they must match S3's
        got = {(int(ds.table.shard[i]), int(ds.table.key[i])): p
               for i, p in f.fetch(range(len(ds)))}
    assert got == truth


def test_a_crowded_folder_lists_a_bounded_span_then_heads_the_rest(s3_server, folder,
                                                                   fault_proxy, monkeypatch):
    bucket, urls, _ = folder
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for k in range(12):   # sorts between train-0000.rec and train-0001.idx
        fs.pipe_file(f"{bucket[5:]}/ds/train-0000.x{k:02d}", b"other")
    fs.mkdir(f"{bucket[5:]}/ds/train-0000.y-sub")
    fs.pipe_file(f"{bucket[5:]}/ds/train-0000.y-sub/deep", b"z")
    monkeypatch.setattr(s3_listing, "LIST_PAGE", 2)   # budget: ceil(2 * 3 / 2) + 1 = 4 pages
    so = fault_proxy.storage_options
    ds = open_dataset(urls, storage_options=so)
    t = fault_proxy.traffic()
    # 4 pages of 2 reach train-0000.rec and 7 others, not shards 1 and 2: one HEAD each
    assert _requests(t, "GET") == 4 and _requests(t, "HEAD .rec") == 2
    monkeypatch.setenv("CLOUDREC_S3_LIST", "0")
    assert _facts(ds) == _facts(open_dataset(urls, storage_options=so))


def test_a_refused_listing_falls_back_to_heads(folder, fault_proxy):
    bucket, urls, truth = folder
    so = fault_proxy.storage_options
    # a policy granting GetObject but not ListBucket: every listing answered 403
    fault_proxy.configure(p403=1.0, targets="GET")
    ds = open_dataset(urls, storage_options=so)
    t, st = fault_proxy.traffic(), fault_proxy.stats()
    assert st["403"] >= 1 and _requests(t, "HEAD .rec") == 3 and len(ds) == len(truth)
    fault_proxy.configure()
    assert _facts(ds) == _facts(open_dataset(urls, storage_options=so))


def test_a_missing_shard_is_still_named(folder, fault_proxy):
    bucket, urls, _ = folder
    so = fault_proxy.storage_options
    gone = bucket + "/ds/train-0009.rec"
    with pytest.raises(StorageError, match="train-0009.rec") as exc:
        open_dataset(urls + [gone], storage_options=so)
    assert isinstance(exc.value, FileNotFoundError)
    t = fault_proxy.traffic()
    # the listing, then a HEAD of the missing one only (s3fs follows a HEAD that finds
    # nothing with a listing of that name as a folder)
    assert _requests(t, "HEAD .rec") == 1 and _requests(t, "GET") == 2


def test_a_missing_bucket_is_named(s3_server, fault_proxy):
    urls = [f"s3://no-such-bucket-cloudrec/ds/train-{i:04d}.rec" for i in range(2)]
    with pytest.raises(StorageError, match="no-such-bucket-cloudrec/ds/train-0000.rec") as exc:
        open_dataset(urls, storage_options=fault_proxy.storage_options)
    assert isinstance(exc.value, FileNotFoundError)


def test_list_objects_refuses_objects_of_two_folders(s3_server):
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    with pytest.raises(ValueError, match="one folder"):
        s3_listing.list_objects(fs, ["b/a/x.rec", "b/c/y.rec"])
