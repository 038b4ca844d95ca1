"""The compact dataset table: written by `cloudrec index --table`, opened by
open_dataset(table=...) with the same records as the .idx files, refused or
rebuilt when an .idx changes, copied once per node from S3."""
from __future__ import annotations

import os

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.dataset.table_file import (TableStaleWarning, read_table_file, table_nbytes,
                                         write_table)
from cloudrec.errors import ConfigError, IndexFileError
from cloudrec.reader.fetch import RecordFetcher


def _same(a, b):
    for col in ("shard", "key", "offset", "length"):
        assert np.array_equal(np.asarray(getattr(a.table, col)), np.asarray(getattr(b.table, col))), col
    assert [(s.rec_url, s.size, s.version) for s in a.shards] == \
        [(s.rec_url, s.size, s.version) for s in b.shards]


@pytest.fixture
def local_shards(tmp_path):
    (tmp_path / "ds").mkdir()
    urls, truth = write_synthetic(str(tmp_path / "ds"), 3, 40, min_size=10, max_size=3000, seed=2)
    return urls, truth, str(tmp_path / "ds" / "train.crtable")


def test_cli_writes_a_table_that_opens_to_the_same_dataset(local_shards, capsys):
    from cloudrec.cli import main
    urls, truth, out = local_shards
    assert main(["index", "--table", out, *urls]) == 0
    assert "120 records of 3 shard(s)" in capsys.readouterr().out
    plain = open_dataset(urls)
    mapped = open_dataset(urls, table=out)
    _same(plain, mapped)
    assert isinstance(mapped.table.offset, np.memmap)
    assert os.path.getsize(out) <= table_nbytes(120, 3)
    with RecordFetcher(mapped) as f:   # and reads the right records
        got = {(int(mapped.table.shard[i]), int(mapped.table.key[i])): p
               for i, p in f.fetch(range(len(mapped)))}
    assert got == truth


def test_a_changed_idx_falls_back_or_is_refused(local_shards):
    urls, _, out = local_shards
    write_table(urls, out)
    # rewrite shard 1 with other records: its .idx changes size
    write_synthetic(os.path.dirname(urls[0]), 2, 25, min_size=10, max_size=3000, seed=9)
    with pytest.warns(TableStaleWarning, match="train-0000.idx|train-0000.rec"):
        ds = open_dataset(urls, table=out)
    _same(ds, open_dataset(urls))           # the .idx files were read instead
    with pytest.raises(IndexFileError, match="stale"):
        open_dataset(urls, table=out, table_stale="error")


def test_table_for_other_shards_and_damaged_tables(local_shards, tmp_path):
    urls, _, out = local_shards
    write_table(urls, out)
    with pytest.raises(ConfigError, match="other shards"):
        open_dataset(urls[:2], table=out)
    bad = tmp_path / "bad.crtable"
    bad.write_bytes(b"not a table at all" * 10)
    with pytest.raises(IndexFileError, match="bad magic"):
        open_dataset(urls, table=str(bad))
    cut = tmp_path / "cut.crtable"
    cut.write_bytes(open(out, "rb").read()[:-200])
    with pytest.raises(IndexFileError, match="truncated"):
        open_dataset(urls, table=str(cut))
    with pytest.raises(IndexFileError, match="not found"):
        read_table_file("memory://nowhere/x.crtable")


@pytest.mark.s3
def test_s3_table_is_copied_once_per_node_and_checked(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(tmp_path / "cache"))
    so = s3_server.storage_options
    bucket = s3_server.new_bucket()
    urls, truth = write_synthetic(bucket, 4, 30, min_size=10, max_size=2000, seed=5,
                                  storage_options=so)
    table_url = bucket + "/train.crtable"
    write_table(urls, table_url, so)
    a = open_dataset(urls, table=table_url, storage_options=so)
    _same(a, open_dataset(urls, storage_options=so))
    copies = os.listdir(tmp_path / "cache" / "tables")
    assert len([c for c in copies if c.endswith(".crtable")]) == 1
    b = read_table_file(table_url, so)
    assert b.path == a.table.offset.filename      # the same local copy, mapped again
    with RecordFetcher(a) as f:
        assert {(int(a.table.shard[i]), int(a.table.key[i])): p
                for i, p in f.fetch(range(len(a)))} == truth
    # replace one .idx with a same-named different one: refused
    fs = a.filesystem(0)[0]
    fs.pipe_file(urls[2][5:-4] + ".idx", b"0\t0\n")
    with pytest.raises(IndexFileError, match="stale"):
        open_dataset(urls, table=table_url, storage_options=so, table_stale="error")


def test_s3_table_open_is_one_table_get_and_one_listing(s3_server, fault_proxy, tmp_path,
                                                        monkeypatch):
    """Opening from a table on S3 (the shards' folder now listed while the table is
    fetched): one LIST and one GET of the table, no .idx GET or shard HEAD, the same
    records; a shard rewritten after the table still shows as stale."""
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(tmp_path / "cache"))
    so = dict(fault_proxy.storage_options)
    bucket = s3_server.new_bucket()
    urls, truth = write_synthetic(bucket, 3, 20, min_size=10, max_size=2000, seed=6,
                                  storage_options=s3_server.storage_options)
    table_url = bucket + "/train.crtable"
    write_table(urls, table_url, s3_server.storage_options)
    # write_table left a node copy in the cache folder: a fresh folder, a node that has none
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(tmp_path / "cache2"))
    fault_proxy.configure(latency_ms=30)
    ds = open_dataset(urls, table=table_url, storage_options=so)
    t = fault_proxy.traffic()
    assert t["GET"]["requests"] == 1                 # the listing
    assert t["GET .crtable"]["requests"] == 1        # the table, copied to the node
    # its size and version (keying the copy): a HEAD, or the listing's entry if it came first
    assert t.get("HEAD .crtable", {"requests": 0})["requests"] <= 1
    assert not any(k.startswith(("GET .idx", "HEAD .rec")) for k in t)
    with RecordFetcher(ds) as f:
        assert {(int(ds.table.shard[i]), int(ds.table.key[i])): p
                for i, p in f.fetch(range(len(ds)))} == truth
    # a shard rewritten after the table: the early listing still sees it
    write_synthetic(bucket, 1, 7, min_size=10, max_size=2000, seed=8,
                    storage_options=s3_server.storage_options)
    fault_proxy.configure(latency_ms=30)
    with pytest.warns(TableStaleWarning, match="train-0000"):
        fresh = open_dataset(urls, table=table_url, storage_options=so)
    assert len(fresh) == 7 + 2 * 20
