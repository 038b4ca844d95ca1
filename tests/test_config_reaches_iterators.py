"""Every key of every packaged YAML reaches the iterator it configures.

For each ``cloudrec/configs/*.yaml`` the test builds the configured iterator on a
small local `.rec` (the data paths come in through the configs' own
``${CLOUDREC_DATA}``/``${CLOUDREC_DATA_IDX}``), then walks the file's keys and
checks each one on the built iterator: its parsed params, its augmenter
arguments, its fetcher's settings and cache, the typed ``train`` section.  A
key with no check fails the test, so a new YAML key must reach something.
The cache settings are then shown to fill the cache folder when the same
configs read ``s3://`` from the loopback moto server.
"""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import cv2
import numpy as np
import pytest
import yaml

from cloudrec import load_config
from cloudrec.config import expand_env, parse_size
from cloudrec.format.irheader import IRHeader
from cloudrec.recordio import MXIndexedRecordIO, pack_img

CONFIG_DIR = Path(__file__).resolve().parent.parent / "cloudrec" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
N_RECORDS = 6


def _write_rec(folder: Path, detection: bool) -> Tuple[str, str]:
    """N_RECORDS small JPEGs (with detection labels if asked) as folder/train.rec + .idx."""
    folder.mkdir(parents=True, exist_ok=True)
    rec, idx = str(folder / "train.rec"), str(folder / "train.idx")
    rng = np.random.default_rng(0)
    w = MXIndexedRecordIO(idx, rec, "w")
    for i in range(N_RECORDS):
        img = rng.integers(0, 256, (40 + 4 * i, 52, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)
        label: Any = float(i % 3)
        if detection:  # header width 2, object width 5: class, x0, y0, x1, y1 (normalised)
            label = np.array([2, 5, i % 3, 0.1, 0.2, 0.7, 0.9], np.float32)
        w.write_idx(i, pack_img(IRHeader(0, label, i, 0), img, quality=90))
    w.close()
    return rec, idx


def _walk(section: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) of every leaf of a YAML section."""
    if isinstance(section, dict):
        for k, v in section.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, section


def _source(it: Any) -> Any:
    """The iterator's RecordSource (the one seam holding its dataset and fetcher)."""
    src = getattr(it, "_source", None)
    return src if src is not None else it.imgrec.source


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, list):
        want = tuple(want)
    if isinstance(got, list):
        got = tuple(got)
    if isinstance(want, float) or isinstance(got, float):
        return got == pytest.approx(want)
    return got == want


def _param_value(it: Any, key: str) -> Any:
    """Where the iterator keeps the value of its keyword ``key``."""
    if type(it).__name__.startswith("ImageRecord"):
        for group in fields(it.params):
            g = getattr(it.params, group.name)
            if key in {f.name for f in fields(g)}:
                return getattr(g, key)
        raise AssertionError(f"ImageRecordIter has no parameter {key}")
    if key in ("batch_size", "data_shape", "shuffle"):
        return getattr(it, key)
    return it._det_aug_kwargs[key]  # ImageDetIter: the CreateDetAugmenter arguments


def _check_key(key: str, value: Any, it: Any, cfg: Any, raw: Dict[str, Any], data: Dict[str, str]
               ) -> None:
    src = _source(it)
    fetcher = src.fetcher
    section, _, name = key.partition(".")
    if key == "iterator":
        assert type(it).__name__ == value
    elif section == "data":
        shard = src.ds.shards[0]
        want = data[name]
        assert (shard.rec_url if name == "path_imgrec" else shard.idx_url).endswith(want), key
    elif section == "params":
        assert _same(_param_value(it, name), value), (key, _param_value(it, name), value)
        if name == "batch_size":
            assert it.provide_data[0].shape[0] == value
        if name == "shuffle":  # the order object the iterator reads with
            assert (it.sampler.mode != "none") == bool(value)
        if name == "preprocess_threads":
            assert it._pipeline is not None and it.params.parser.preprocess_threads == value
    elif key == "storage.cache.mode":
        assert fetcher.cache_mode == value and src.fetch_options.cache == value
        if value == "shards":  # local shards are read in place; the cache object still exists
            assert fetcher._cache is not None
    elif key == "storage.cache.max_bytes":
        assert src.fetch_options.cache_max_bytes == parse_size(value)
        if fetcher._cache is not None:
            assert fetcher._cache.cache.max_bytes == parse_size(value)
    elif key == "storage.cache.dir":
        assert src.fetch_options.cache_dir == os.path.expanduser(value)
    elif key == "storage.fetch.retries":
        assert fetcher.retry.max_attempts == value + 1
    elif key == "storage.fetch.timeout":
        assert fetcher.retry.timeout == value
    elif section == "storage" and name.startswith("fetch."):
        attr = name.split(".", 1)[1]
        assert getattr(fetcher, attr) == parse_size(value), key
    elif section == "storage":
        # S3 settings: the iterator of an s3:// URL gets them as storage_options (shown on
        # the moto server below); a local path must not be handed S3 client options
        so = cfg.iterator_kwargs(path_imgrec="s3://bucket/train.rec")["storage_options"]
        ck = so.get("client_kwargs", {})
        expect = {"storage.region": lambda: ck["region_name"] == value,
                  "storage.endpoint_url": lambda: ck.get("endpoint_url") == (value or None),
                  "storage.key_env": lambda: so.get("key") == os.environ.get(value),
                  "storage.secret_env": lambda: so.get("secret") == os.environ.get(value)}
        assert key in expect, f"no check for YAML key {key}"
        assert expect[key](), (key, so)
        params = getattr(it, "params", None)
        local_so = params.extra.storage_options if params is not None else it.storage_options
        assert not (local_so or {}).get("client_kwargs")
    elif section == "train":
        assert _same(getattr(cfg.train, name), value), key
    else:
        raise AssertionError(f"no check for YAML key {key}")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_yaml_key_reaches_its_iterator(path, tmp_path, monkeypatch):
    detection = yaml.safe_load(path.read_text()).get("iterator") == "ImageDetIter"
    rec, idx = _write_rec(tmp_path / "data", detection)
    monkeypatch.setenv("CLOUDREC_DATA", rec)
    monkeypatch.setenv("CLOUDREC_DATA_IDX", idx)
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CLOUDREC_S3_ENDPOINT", raising=False)
    raw = expand_env(yaml.safe_load(path.read_text()))  # the values load_config sees
    cfg = load_config(path)
    data = {"path_imgrec": rec, "path_imgidx": idx}
    overrides: Dict[str, Any] = {}
    if not raw.get("data"):  # a storage-only config: any iterator over our records
        overrides = dict(path_imgrec=rec, path_imgidx=idx, batch_size=2, data_shape=(3, 16, 16))
    keys = list(_walk({k: v for k, v in raw.items()}, ""))
    assert keys, path
    with cfg.make_iterator(**overrides) as it:
        batch = it.next()
        assert batch.data[0].shape[0] == it.batch_size
        for key, value in keys:
            _check_key(key, value, it, cfg, raw, data)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def _cache_files(folder: Path) -> list:
    """The cached shards (``<key>.data``; locks and ``.json`` records aside)."""
    return sorted(p for p in folder.rglob("*.data") if p.is_file())


@pytest.mark.s3
@pytest.mark.parametrize("name,indexed", [("imagenet-val", True), ("imagenet-train", False),
                                          ("faces-112", True)])
def test_yaml_cache_settings_fill_the_cache_from_s3(name, indexed, s3_server, tmp_path,
                                                    monkeypatch):
    bucket = s3_server.new_bucket()
    rec, idx = _write_rec(tmp_path / "data", detection=False)
    import fsspec
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    fs.put(rec, f"{bucket[5:]}/train.rec")
    fs.put(idx, f"{bucket[5:]}/train.idx")
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLOUDREC_DATA", f"{bucket}/train.rec")
    if indexed:
        monkeypatch.setenv("CLOUDREC_DATA_IDX", f"{bucket}/train.idx")
    monkeypatch.setenv("CLOUDREC_S3_ENDPOINT", s3_server.endpoint_url)
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(cache))  # the configs' default folder
    cfg = load_config(name)
    assert cfg.storage.cache_mode in ("auto", "shards")
    with cfg.make_iterator(batch_size=4) as it:   # small batches: the data has 6 records
        so = it.params.extra.storage_options
        assert so["client_kwargs"]["endpoint_url"] == s3_server.endpoint_url
        n = sum(4 - b.pad for b in it)
        fetcher = it._source.fetcher
        assert fetcher.cache_mode == cfg.storage.cache_mode and fetcher._cache is not None
        assert fetcher._cache.cache.max_bytes == cfg.storage.cache_max_bytes
        assert fetcher._cache.cache.dir == str(cache)
    assert n == N_RECORDS
    cached = _cache_files(cache)
    assert len(cached) == 1 and cached[0].read_bytes() == Path(rec).read_bytes()


@pytest.mark.s3
def test_yaml_cache_dir_and_cap_from_the_file(s3_server, tmp_path, monkeypatch):
    """storage.cache.dir and max_bytes written in the file (not the environment) decide the
    folder; the README recipe (iterator_kwargs with storage_options) reads through it."""
    bucket = s3_server.new_bucket()
    rec, idx = _write_rec(tmp_path / "data", detection=True)
    import fsspec
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    fs.put(rec, f"{bucket[5:]}/det.rec")
    fs.put(idx, f"{bucket[5:]}/det.idx")
    monkeypatch.delenv("CLOUDREC_CACHE_DIR", raising=False)
    folder = tmp_path / "my-cache"
    cfg_file = tmp_path / "det.yaml"
    raw = yaml.safe_load((CONFIG_DIR / "detection.yaml").read_text())
    raw["data"] = {"path_imgrec": f"{bucket}/det.rec", "path_imgidx": f"{bucket}/det.idx"}
    raw["storage"] = {"endpoint_url": s3_server.endpoint_url, "region": "us-east-1",
                      "cache": {"mode": "shards", "dir": str(folder), "max_bytes": "1MB"},
                      "fetch": {"concurrency": 3, "retries": 2}}
    raw["params"]["batch_size"] = 3
    cfg_file.write_text(yaml.safe_dump(raw))
    cfg = load_config(cfg_file)
    from cloudrec.iterators import ImageDetIter
    kw = cfg.iterator_kwargs(storage_options=cfg.storage.storage_options())
    with ImageDetIter(**kw) as it:
        labels = [b.label[0].shape for b in it]
        f = it.fetcher
        assert (f.concurrency, f.retry.max_attempts, f._cache.cache.max_bytes) == (3, 3, 1 << 20)
    assert len(labels) == 2
    cached = _cache_files(folder)
    assert len(cached) == 1 and cached[0].read_bytes() == Path(rec).read_bytes()
