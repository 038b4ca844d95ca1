"""ImageRecordIter over every storage backend (local, loopback S3, loopback HDFS).

The MXNet fixture dataset is uploaded to the store; reading it by URL must give
MXNet's batches bit for bit, with and without the `.idx`, partitioned, and with
the shard cache.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cloudrec.errors import CloudrecError
from cloudrec.iterators import ImageRecordIter

FX = os.path.join(os.path.dirname(__file__), "fixtures", "mxnet")
ITERS = os.path.join(FX, "reads", "iters")
NORM = dict(mean_r=123.68, mean_g=116.779, mean_b=103.939, std_r=58.395, std_g=57.12,
            std_b=57.375)


def upload(store, folder, name):
    for ext in (".rec", ".idx"):
        with open(os.path.join(FX, folder, name + ext), "rb") as f:
            store.put(name + ext, f.read())
    return store.url(name + ".rec"), store.url(name + ".idx")


def fixture(name):
    with open(os.path.join(ITERS, name + ".json")) as f:
        return json.load(f)


def test_center_norm_from_store_bit_identical(store, tmp_path):
    rec, idx = upload(store, "pack/passthrough", "all")
    ref = np.load(os.path.join(ITERS, "iri_center_norm.data.npy"))
    want = fixture("iri_center_norm")["epochs_out"][0]
    cached = dict(path_imgidx=idx, cache="shards",
                  fetch_options={"cache_dir": str(tmp_path / "cache")})
    for kw in (dict(path_imgidx=idx), dict(), cached):
        with ImageRecordIter(path_imgrec=rec, data_shape=(3, 32, 32), batch_size=5, resize=36,
                             storage_options=store.storage_options, **NORM, **kw) as it:
            batches = list(it)
        assert [(b.pad, b.label[0].tolist()) for b in batches] == \
            [(w["pad"], w["label"]) for w in want]
        np.testing.assert_array_equal(np.concatenate([b.data[0] for b in batches]), ref)


def test_partitions_from_store(store):
    rec, idx = upload(store, "pack/uniq", "uniq")
    for parts, use_idx in ((3, True), (5, False)):
        for part in range(parts):
            name = f"iri_parts{parts}_{part}_{'idx' if use_idx else 'noidx'}"
            want = fixture(name)["epochs_out"][0]
            kw = dict(path_imgidx=idx) if use_idx else {}
            with ImageRecordIter(path_imgrec=rec, data_shape=(3, 32, 32), batch_size=3,
                                 resize=36, num_parts=parts, part_index=part,
                                 storage_options=store.storage_options, **kw) as it:
                got = [(b.pad, b.label[0].tolist()) for b in it]
            assert got == [(w["pad"], w["label"]) for w in want], name


def test_missing_file_is_a_clear_error(store):
    with pytest.raises((CloudrecError, FileNotFoundError)) as ei:
        ImageRecordIter(path_imgrec=store.url("nope.rec"), path_imgidx=store.url("nope.idx"),
                        data_shape=(3, 8, 8), batch_size=1,
                        storage_options=store.storage_options)
    assert "nope" in str(ei.value)


def test_s3_faults_are_retried_and_batches_stay_exact(s3_server, fault_proxy):
    from cloudrec.storage.retry import RetryPolicy
    import fsspec
    bucket = s3_server.new_bucket("iri-faults")
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for ext in (".rec", ".idx"):
        with open(os.path.join(FX, "pack", "uniq", "uniq" + ext), "rb") as f:
            fs.pipe(f"{bucket[5:]}/uniq{ext}", f.read())
    ref_kw = dict(data_shape=(3, 32, 32), batch_size=5, resize=36, shuffle=True, seed=1,
                  rand_crop=True, rand_mirror=True)
    with ImageRecordIter(path_imgrec=os.path.join(FX, "pack", "uniq", "uniq.rec"),
                         path_imgidx=os.path.join(FX, "pack", "uniq", "uniq.idx"),
                         **ref_kw) as it:
        ref = [b.data[0].copy() for b in it]
    fault_proxy.configure(p503=0.25, pdrop=0.1, seed=5)
    retry = RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.2, timeout=2.0, seed=1)
    # small requests so that many of them (and so many faults) happen
    opts = dict(retry=retry, max_gap=0, max_request=4096, window_bytes=8192, concurrency=4)
    with ImageRecordIter(path_imgrec=f"{bucket}/uniq.rec", path_imgidx=f"{bucket}/uniq.idx",
                         storage_options=fault_proxy.storage_options, fetch_options=opts,
                         **ref_kw) as it:
        got = [b.data[0].copy() for b in it]
    st = fault_proxy.stats()
    assert st["faults"] >= 3, st
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
