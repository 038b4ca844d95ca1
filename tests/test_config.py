"""YAML configs: the shipped files load, env expansion, unknown keys named."""
from __future__ import annotations

from pathlib import Path

import pytest

from cloudrec import load_config
from cloudrec.config import config_from_dict, parse_size
from cloudrec.errors import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "cloudrec" / "configs").glob("*.yaml"))


def test_all_shipped_configs_load():
    assert {p.name for p in CONFIGS} >= {"imagenet-train.yaml", "imagenet-val.yaml",
                                         "faces-112.yaml", "detection.yaml"}
    for p in CONFIGS:
        load_config(p)


def test_imagenet_train_values(monkeypatch):
    monkeypatch.setenv("CLOUDREC_DATA", "s3://b/train-{0000..0003}.rec")
    monkeypatch.setenv("CLOUDREC_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    c = load_config("imagenet-train")   # packaged config, by name
    kw = c.iterator_kwargs(batch_size=8)
    assert kw["path_imgrec"] == "s3://b/train-{0000..0003}.rec"
    assert kw["data_shape"] == (3, 224, 224) and kw["batch_size"] == 8
    opts = c.storage.storage_options()
    assert opts["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    assert (opts["key"], opts["secret"]) == ("k", "s")
    assert c.storage.cache_mode == "auto" and c.storage.cache_max_bytes == 200 * 1024 ** 3


@pytest.mark.parametrize("raw,needle", [
    ({"storag": {}}, "'storage'"),
    ({"data": {"path_imgrc": "x"}}, "'path_imgrec'"),
    ({"storage": {"cache": {"max_byte": 1}}}, "'max_bytes'"),
    ({"iterator": "ImageRecordIterator"}, "'ImageRecordIter'"),
    ({"storage": {"cache": {"mode": "always"}}}, "none, shards or auto"),
])
def test_unknown_keys_are_named(raw, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert needle in str(info.value)


def test_env_default_and_missing(monkeypatch):
    monkeypatch.delenv("CLOUDREC_NOPE", raising=False)
    assert config_from_dict({"data": {"path_imgrec": "${CLOUDREC_NOPE:-a.rec}"}}).data == \
        {"path_imgrec": "a.rec"}
    with pytest.raises(ConfigError, match="CLOUDREC_NOPE"):
        config_from_dict({"data": {"path_imgrec": "${CLOUDREC_NOPE}"}})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_parse_size():
    assert parse_size("512MB") == 512 * 1024 ** 2
    assert parse_size("1.5GiB") == int(1.5 * 1024 ** 3)
    assert parse_size(7) == 7
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_cli_config_sets_storage_options_and_cache_dir(tmp_path, monkeypatch, capsys):
    from cloudrec.cli import build_parser, apply_config, main
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  endpoint_url: http://127.0.0.1:9\n"
                   f"  cache:\n    dir: {tmp_path / 'cachedir'}\n")
    ns = build_parser(["inspect"]).parse_args(["--config", str(cfg), "inspect", "x.rec"])
    apply_config(ns)
    assert ns.storage_options["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    # an explicit flag wins over the config
    ns = build_parser(["inspect"]).parse_args(
        ["--config", str(cfg), "inspect", "x.rec", "--storage-options", '{"anon": true}'])
    apply_config(ns)
    assert ns.storage_options == {"anon": True}
    assert main(["--config", str(cfg), "cache", "ls"]) == 0
    assert str(tmp_path / "cachedir") in capsys.readouterr().out


def test_cli_config_unknown_key_is_a_clear_error(tmp_path, capsys):
    from cloudrec.cli import main
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  endpoint: x\n")
    assert main(["--config", str(cfg), "cache", "ls"]) == 1
    assert "unknown key 'endpoint'" in capsys.readouterr().err


def test_train_section_is_typed():
    c = config_from_dict({"train": {"epochs": 3, "lr": 1, "ranks": 2, "steps": 10,
                                    "model": "resnet18"}})
    assert (c.train.epochs, c.train.lr, c.train.ranks, c.train.steps, c.train.model) == \
        (3, 1.0, 2, 10, "resnet18")
    assert isinstance(c.train.lr, float)
    assert config_from_dict({}).train.ranks == 1
    for raw, needle in (({"epochs": 0}, "train.epochs"), ({"lr": -0.1}, "train.lr"),
                        ({"ranks": "two"}, "train.ranks"), ({"model": 5}, "train.model"),
                        ({"epoch": 1}, "'epochs'")):
        with pytest.raises(ConfigError, match=needle):
            config_from_dict({"train": raw})


@pytest.mark.parametrize("iterator,raw,needle", [
    ("ImageIter", {"params": {"rand_crp": True}}, "'rand_crop'"),
    ("ImageDetIter", {"params": {"rand_pad": 0.5, "min_object_coverd": 0.1}},
     "'min_object_covered'"),
    ("SegmentationIter", {"params": {"rand_scael": [1, 2]}}, "'rand_scale'"),
    ("ImageRecordIter", {"params": {"preprocess_thread": 2}}, "'preprocess_threads'"),
    ("ImageRecordIter", {"params": {"cache": "auto"}}, "storage.cache.mode"),
    ("ImageIter", {"params": {"fetch_options": {}}}, "storage.fetch"),
    ("ImageIter", {"params": {"storage_options": {}}}, "storage"),
    ("ImageRecordIter", {"params": {"path_imgrec": "a.rec"}}, "data section"),
    ("ImageRecordIter", {"data": {"path_root": "/imgs"}}, "data.path_root is not used"),
    ("SegmentationIter", {"data": {"path_imglist": "a.lst"}}, "data.path_imglist"),
    # values: ImageRecordIter's checked at load, the option objects' for every iterator
    ("ImageRecordIter", {"data": {"path_imgrec": "a.rec"}, "params": {"shuffle_mode": "rnd"}},
     "shuffle_mode"),
    ("ImageRecordIter", {"data": {"path_imgrec": "a.rec"}, "params": {"resize": 0}}, "resize"),
    ("ImageIter", {"params": {"num_parts": 2, "part_index": 3}}, "PartitionOptions.rank"),
    ("ImageDetIter", {"params": {"last_batch_handle": "wrap"}}, "last_batch_handle"),
    ("ImageIter", {"params": {"truncated": "skip"}}, "DecodeOptions.truncated"),
])
def test_params_and_data_checked_for_every_iterator(iterator, raw, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        config_from_dict({"iterator": iterator, **raw}, source="x.yaml")
    assert str(info.value).startswith("x.yaml: ")


def test_storage_fetch_section():
    c = config_from_dict({"storage": {"fetch": {"concurrency": 32, "readahead_bytes": "64MB",
                                                "max_gap": "1MB", "retries": 2, "timeout": 5,
                                                "max_waste": 0.02},
                                      "cache": {"mode": "shards", "max_bytes": "2GB"}}})
    fo = c.storage.fetch_options()
    assert (fo.concurrency, fo.readahead_bytes, fo.max_gap, fo.cache, fo.cache_max_bytes,
            fo.max_waste) == (32, 64 << 20, 1 << 20, "shards", 2 << 30, 0.02)
    assert c.options.fetch == fo
    fetch = c.iterator_kwargs()["fetch_options"]
    assert fetch["concurrency"] == 32 and fetch["cache"] == "shards" and fetch["max_waste"] == 0.02
    assert (fetch["retry"].max_attempts, fetch["retry"].timeout) == (3, 5.0)
    with pytest.raises(ConfigError, match="'concurency'.*'concurrency'"):
        config_from_dict({"storage": {"fetch": {"concurency": 1}}})
    with pytest.raises(ConfigError, match="storage.fetch.concurrency"):
        config_from_dict({"storage": {"fetch": {"concurrency": 0}}})
    with pytest.raises(ConfigError, match="storage.cache.max_bytes"):
        config_from_dict({"storage": {"cache": {"max_bytes": "huge"}}})


def test_iterator_kwargs_carry_cache_and_merge_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    c = config_from_dict({"data": {"path_imgrec": "s3://b/a.rec"},
                          "params": {"batch_size": 4, "data_shape": [3, 8, 8]},
                          "storage": {"region": "eu-west-1",
                                      "cache": {"mode": "auto", "dir": str(tmp_path),
                                                "max_bytes": 1000}}})
    kw = c.iterator_kwargs()
    assert kw["fetch_options"] == {"cache": "auto", "cache_dir": str(tmp_path),
                                   "cache_max_bytes": 1000}
    assert kw["storage_options"]["client_kwargs"] == {"region_name": "eu-west-1"}
    assert kw["data_shape"] == (3, 8, 8)
    # overrides merge into the file's fetch options; cache= is one of them
    kw = c.iterator_kwargs(cache="none", fetch_options={"concurrency": 2})
    assert kw["fetch_options"] == {"cache": "none", "cache_dir": str(tmp_path),
                                   "cache_max_bytes": 1000, "concurrency": 2}
    assert "cache" not in kw
    # a local path gets no S3 client options (an HDFS client would refuse them)
    local = c.iterator_kwargs(path_imgrec=str(tmp_path / "a.rec"))
    assert "storage_options" not in local
    assert c.storage.storage_options("hdfs://nn:9000/a.rec") == {}
    assert c.storage.storage_options("s3://b/a.rec")["key"] == "k"
    # the README's recipe still works: an explicit storage_options wins
    kw = c.iterator_kwargs(storage_options={"anon": True})
    assert kw["storage_options"] == {"anon": True} and kw["fetch_options"]["cache"] == "auto"


def test_options_built_at_load():
    c = config_from_dict({"iterator": "ImageIter",
                          "params": {"shuffle": True, "seed": 3, "num_parts": 2, "part_index": 1,
                                     "last_batch_handle": "discard", "num_threads": 2,
                                     "max_pixels": 100}})
    o = c.options
    assert (o.order.shuffle, o.order.seed, o.partition.rank, o.partition.world_size,
            o.partition.last, o.decode.threads, o.decode.max_pixels) == \
        (True, 3, 1, 2, "drop", 2, 100)


def test_make_iterator_builds_the_configured_iterator(tmp_path):
    from cloudrec.recordio import MXIndexedRecordIO, pack_img
    from cloudrec.format.irheader import IRHeader
    import numpy as np
    rec, idx = str(tmp_path / "a.rec"), str(tmp_path / "a.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(5):
        w.write_idx(i, pack_img(IRHeader(0, float(i), i, 0),
                                np.full((12, 12, 3), 20 * i, np.uint8), img_fmt=".png"))
    w.close()
    for iterator in ("ImageRecordIter", "ImageIter"):
        c = config_from_dict({"iterator": iterator,
                              "data": {"path_imgrec": rec, "path_imgidx": idx},
                              "params": {"batch_size": 5, "data_shape": [3, 12, 12]},
                              "storage": {"fetch": {"concurrency": 2}}})
        with c.make_iterator() as it:
            assert type(it).__name__ == iterator
            batch = it.next()
            label = np.asarray(batch.label[0]).reshape(-1)
            assert sorted(label.tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]
            fetcher = it._source.fetcher if hasattr(it, "_source") else it.fetcher
            assert fetcher.concurrency == 2
