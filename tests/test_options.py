"""cloudrec.options: validation naming the field, one fetch-defaults table, the MXNet adapter."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cloudrec.errors import ConfigError
from cloudrec.options import (FETCH_DEFAULTS, DecodeOptions, FetchOptions, OrderOptions,
                              PartitionOptions, backend_of)
from cloudrec.options_adapter import from_mxnet_kwargs
from cloudrec.storage.retry import RetryPolicy


@pytest.mark.parametrize("cls,kw,needle", [
    (FetchOptions, {"concurrency": 0}, "FetchOptions.concurrency"),
    (FetchOptions, {"readahead_bytes": "lots"}, "FetchOptions.readahead_bytes"),
    (FetchOptions, {"max_gap": -1}, "FetchOptions.max_gap"),
    (FetchOptions, {"retries": -1}, "FetchOptions.retries"),
    (FetchOptions, {"max_waste": -0.1}, "FetchOptions.max_waste"),
    (FetchOptions, {"max_waste": "2%"}, "FetchOptions.max_waste"),
    (FetchOptions, {"timeout": 0}, "FetchOptions.timeout"),
    (FetchOptions, {"cache": "always"}, "FetchOptions.cache"),
    (FetchOptions, {"cache_max_bytes": True}, "FetchOptions.cache_max_bytes"),
    (FetchOptions, {"cache_dir": 3}, "FetchOptions.cache_dir"),
    (FetchOptions, {"retry": RetryPolicy(), "retries": 2}, "not both"),
    (FetchOptions, {"retry": {"max_attempts": 2}}, "FetchOptions.retry"),
    (FetchOptions, {"strict": "no"}, "FetchOptions.strict"),
    (OrderOptions, {"mode": "random"}, "OrderOptions.mode"),
    (OrderOptions, {"seed": -1}, "OrderOptions.seed"),
    (OrderOptions, {"shuffle": "yes"}, "OrderOptions.shuffle"),
    (OrderOptions, {"block_size": 0}, "OrderOptions.block_size"),
    (PartitionOptions, {"world_size": 0}, "PartitionOptions.world_size"),
    (PartitionOptions, {"rank": 2, "world_size": 2}, "PartitionOptions.rank"),
    (PartitionOptions, {"part_mode": "fixed"}, "PartitionOptions.part_mode"),
    (PartitionOptions, {"part_mode": "even", "last": "roll_over"}, "PartitionOptions.last"),
    (DecodeOptions, {"threads": 0}, "DecodeOptions.threads"),
    (DecodeOptions, {"max_pixels": -5}, "DecodeOptions.max_pixels"),
    (DecodeOptions, {"truncated": "ignore"}, "DecodeOptions.truncated"),
    (DecodeOptions, {"reduce": 1}, "DecodeOptions.reduce"),
])
def test_bad_values_name_the_field(cls, kw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        cls(**kw)


def test_objects_are_frozen_and_normalise_values(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    f = FetchOptions(readahead_bytes="32MB", cache_max_bytes="1.5GiB", cache_dir="~/c",
                     concurrency=np.int64(3))
    assert (f.readahead_bytes, f.cache_max_bytes) == (32 << 20, int(1.5 * (1 << 30)))
    assert f.cache_dir == str(tmp_path / "c") and type(f.concurrency) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.concurrency = 5  # type: ignore[misc]
    assert OrderOptions(seed=None).seed == 0  # None means the default, as on every front end


@pytest.mark.parametrize("url,backend", [
    ("/data/train.rec", "local"), ("file:///data/a.rec", "local"), ("memory://x/a.rec", "local"),
    ("s3://b/a.rec", "object"), ("gs://b/a.rec", "object"), ("https://h/a.rec", "object"),
    ("hdfs://nn:9000/a.rec", "hdfs"), ("webhdfs://nn/a.rec", "hdfs"),
])
def test_backend_of(url, backend):
    assert backend_of(url) == backend


def test_fetcher_kwargs_one_table_per_backend():
    plain = FetchOptions()
    local = plain.fetcher_kwargs("/d/a.rec;/d/b.rec")
    assert local["concurrency"] == FETCH_DEFAULTS["local"]["concurrency"] == 4
    assert plain.fetcher_kwargs(["s3://b/a.rec"])["concurrency"] == 16
    assert plain.fetcher_kwargs("hdfs://nn:9/a.rec")["concurrency"] == 8
    # a mix is read with the most remote backend's settings
    assert plain.fetcher_kwargs(["/d/a.rec", "s3://b/b.rec"])["concurrency"] == 16
    assert local["retry"] is None and local["cache"] == "none" and "strict" not in local
    assert FetchOptions(strict=False).fetcher_kwargs("/d/a.rec")["strict"] is False
    assert "max_waste" not in local   # unbounded unless asked for
    tuned = FetchOptions(concurrency=2, max_gap=0, retries=3, timeout=5, cache="shards",
                         cache_dir="/tmp/x", cache_max_bytes=10, max_waste=0.02)
    kw = tuned.fetcher_kwargs("s3://b/a.rec")
    assert (kw["concurrency"], kw["max_gap"], kw["cache"], kw["cache_dir"],
            kw["cache_max_bytes"], kw["max_waste"]) == (2, 0, "shards", "/tmp/x", 10, 0.02)
    assert kw["readahead_bytes"] == FETCH_DEFAULTS["object"]["readahead_bytes"]
    assert (kw["retry"].max_attempts, kw["retry"].timeout) == (4, 5.0)
    # the keywords are exactly RecordFetcher's
    import inspect
    from cloudrec.reader.fetch import RecordFetcher
    assert set(kw) <= set(inspect.signature(RecordFetcher.__init__).parameters)


def test_coerce_merges_and_refuses_conflicts():
    assert FetchOptions.coerce(None, cache="auto").cache == "auto"
    assert FetchOptions.coerce({"cache": "shards"}, cache="none").cache == "shards"
    assert FetchOptions.coerce({"concurrency": 3}, cache="auto") == \
        FetchOptions(concurrency=3, cache="auto")
    with pytest.raises(ConfigError, match="cache is given twice"):
        FetchOptions.coerce({"cache": "shards"}, cache="auto")
    with pytest.raises(ConfigError, match="'concurency'.*'concurrency'"):
        FetchOptions.coerce({"concurency": 3})


def test_partition_names_and_sampler_kwargs():
    assert PartitionOptions(part_mode="even").partition_name("ImageIter") == "steps"
    mx = PartitionOptions(part_mode="mxnet", last="pad-next")
    assert mx.partition_name("ImageRecordIter", indexed=True) == "mxnet-count"
    assert mx.partition_name("ImageRecordIter", indexed=False) == "mxnet-bytes"
    assert mx.partition_name("ImageIter") == "floor"
    assert PartitionOptions(rank=1, world_size=3, part_mode="even", last="fill").sampler_kwargs() \
        == {"rank": 1, "world_size": 3, "last": "pad"}
    o = OrderOptions(shuffle=True, mode="block", seed=4, block_size=8)
    assert o.sampler_kwargs() == {"seed": 4, "mode": "block", "order_options": {"block_size": 8}}
    assert OrderOptions(shuffle=False, mode="block").effective_mode == "none"


def test_adapter_image_record_iter_names():
    opts, rest = from_mxnet_kwargs(
        dict(batch_size=8, data_shape=(3, 8, 8), shuffle="True", seed="3", num_parts=4,
             part_index="2", round_batch=False, preprocess_threads=6, decode_reduce=True,
             cache="auto", fetch_options={"concurrency": 5, "cache_dir": "/tmp/c"},
             shuffle_mode="block", order_options={"window_blocks": 2}), "ImageRecordIter")
    assert rest == {"batch_size": 8, "data_shape": (3, 8, 8)}
    assert opts.order == OrderOptions(shuffle=True, mode="block", seed=3, window_blocks=2)
    assert opts.partition == PartitionOptions(rank=2, world_size=4, part_mode="mxnet", last="fill")
    assert opts.decode == DecodeOptions(threads=6, reduce=True)
    assert opts.fetch == FetchOptions(concurrency=5, cache="auto", cache_dir="/tmp/c")
    # MXNet's defaults on the MXNet front end
    d, _ = from_mxnet_kwargs({}, "ImageRecordIter")
    assert (d.order.mode, d.partition.part_mode, d.partition.last, d.decode.threads) == \
        ("mxnet", "mxnet", "pad-next", 4)
    even, _ = from_mxnet_kwargs({"part_mode": "even", "round_batch": True}, "ImageRecordIter")
    assert even.partition.last == "pad"


@pytest.mark.parametrize("front_end", ["ImageIter", "ImageDetIter"])
def test_adapter_image_iter_names(front_end):
    for handle, last in (("pad", "pad"), ("discard", "drop"), ("roll_over", "roll_over")):
        opts, rest = from_mxnet_kwargs({"last_batch_handle": handle, "num_threads": 3,
                                        "rand_crop": True}, front_end)
        assert opts.partition.last == last and opts.decode.threads == 3
        assert rest == {"rand_crop": True}
    with pytest.raises(ConfigError, match="last_batch_handle"):
        from_mxnet_kwargs({"last_batch_handle": "wrap"}, front_end)


def test_adapter_cloudrec_names_are_the_same_everywhere():
    common = dict(rank=1, world_size=2, part_mode="even", last_batch="drop", threads=3,
                  max_pixels=1000, truncated="mxnet", seed=9, shuffle=True,
                  shuffle_mode="global", cache="shards")
    seen = set()
    for front_end in ("ImageRecordIter", "ImageIter", "ImageDetIter", "SegmentationIter",
                      "cloudrec"):
        opts, rest = from_mxnet_kwargs(common, front_end)
        assert rest == {}
        seen.add(opts)
    assert len(seen) == 1  # same keywords, same objects on every front end
    opts = seen.pop()
    assert opts.partition == PartitionOptions(rank=1, world_size=2, part_mode="even", last="drop")
    assert opts.decode == DecodeOptions(threads=3, max_pixels=1000, truncated="mxnet")


def test_adapter_objects_and_errors():
    fetch = FetchOptions(concurrency=2)
    opts, _ = from_mxnet_kwargs({"fetch": fetch, "order": OrderOptions(seed=5), "seed": 6,
                                 "decode": DecodeOptions(threads=2)}, "ImageIter")
    assert opts.fetch.concurrency == 2 and opts.order.seed == 6 and opts.decode.threads == 2
    with pytest.raises(ConfigError, match="'rank' and 'part_index'"):
        from_mxnet_kwargs({"rank": 0, "part_index": 0}, "ImageIter")
    with pytest.raises(ConfigError, match="'threads' and 'preprocess_threads'"):
        from_mxnet_kwargs({"threads": 2, "preprocess_threads": 2}, "ImageRecordIter")
    with pytest.raises(ConfigError, match="order= must be a OrderOptions"):
        from_mxnet_kwargs({"order": {"seed": 1}}, "ImageIter")
    with pytest.raises(ConfigError, match="'window_block'.*'window_blocks'"):
        from_mxnet_kwargs({"order_options": {"window_block": 1}}, "cloudrec")
    with pytest.raises(ConfigError, match="PartitionOptions.rank"):
        from_mxnet_kwargs({"num_parts": 2, "part_index": 2}, "ImageRecordIter")
    with pytest.raises(ConfigError, match="unknown front end"):
        from_mxnet_kwargs({}, "ImageRecIter")


def test_record_source_takes_its_defaults_from_fetch_options(tmp_path):
    from cloudrec.iterators._records import RecordSource
    from cloudrec.recordio import MXIndexedRecordIO
    rec, idx = str(tmp_path / "a.rec"), str(tmp_path / "a.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(3):
        w.write_idx(i, bytes([i]) * 10)
    w.close()
    src = RecordSource(rec, idx)
    try:
        assert src.fetcher.concurrency == FETCH_DEFAULTS["local"]["concurrency"]
        assert src.fetch_options == FetchOptions()
        assert [p for _, p in src.fetch([2, 0])] == [bytes([2]) * 10, bytes([0]) * 10]
    finally:
        src.close()
    src = RecordSource(rec, idx, cache="shards",
                       fetch_options=FetchOptions(concurrency=2, cache_dir=str(tmp_path / "c"),
                                                  cache_max_bytes=1 << 20, retries=1))
    try:
        f = src.fetcher
        assert (f.concurrency, f.cache_mode, f.retry.max_attempts) == (2, "shards", 2)
        assert (f._cache.cache.dir, f._cache.cache.max_bytes) == (str(tmp_path / "c"), 1 << 20)
    finally:
        src.close()
    with pytest.raises(ConfigError, match="'concurency'"):
        RecordSource(rec, idx, fetch_options={"concurency": 2})
