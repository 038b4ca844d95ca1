"""Record CRCs in the dataset table (``cloudrec index --table --crc``): every record a
fetcher hands out is checked, wherever its bytes came from.  A byte inverted on the way
(the fault proxy's ``pflip``) is read again and healed; bytes that stay wrong are a
ChecksumMismatchError naming the shard, the bytes and the record."""
import argparse
import dataclasses
import os
import zlib

import numpy as np
import pytest

from cloudrec.cli import main
from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.dataset.table_file import FLAG_CRC, HEADER, _map, write_table
from cloudrec.errors import ChecksumMismatchError, IndexFileError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.testing import FaultProxy
from cloudrec.tools.index import add_arguments, run


def _folder(tmp_path):
    (tmp_path / "d").mkdir()
    return str(tmp_path / "d")


def _truth_bytes(ds):
    """Each record's bytes ``[offset, offset + length)``, read straight from its file."""
    t, out = ds.table, []
    for i in range(len(t)):
        fs, path = ds.filesystem(int(t.shard[i]))
        out.append(fs.cat_file(path, start=int(t.offset[i]), end=int(t.offset[i] + t.length[i])))
    return out


def _flip_in_place(path, offset):
    """Invert one byte of a local file and keep its size and mtime (a table still matches)."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_table_keeps_each_records_crc32_and_older_readers_still_map_it(tmp_path, capsys):
    urls, truth = write_synthetic(_folder(tmp_path), 3, 30, seed=5, min_size=100, max_size=3000)
    out = str(tmp_path / "t.crtable")
    assert main(["index", "--table", out, "--crc", *urls]) == 0
    assert "with record CRCs" in capsys.readouterr().out
    ds = open_dataset(urls, table=out)
    want = [zlib.crc32(b) for b in _truth_bytes(ds)]
    assert ds.table.crc.dtype == np.uint32 and ds.table.crc.tolist() == want
    with open(out, "rb") as fh:
        assert HEADER.unpack(fh.read(HEADER.size))[2] == FLAG_CRC
    meta, table, _ = _map(out, out, check_crc=True)   # the meta's crc32 covers the 4 columns
    assert zlib.crc32(np.ascontiguousarray(table.crc).tobytes()) == meta["crc32_crc"]
    plain = write_table(urls, str(tmp_path / "plain.crtable"))
    assert plain.table.crc is None and open_dataset(urls).table.crc is None
    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(IndexFileError, match="--crc goes with --table"):
        run(p.parse_args([urls[0], "--crc"]))


def test_a_damaged_crc_column_is_refused_like_any_damaged_table(tmp_path):
    urls, _ = write_synthetic(_folder(tmp_path), 1, 20, seed=6)
    out = str(tmp_path / "t.crtable")
    write_table(urls, out, crc=True)
    meta, table, _ = _map(out, out)
    assert table.crc is not None
    _map(out, out, check_crc=True)
    _flip_in_place(out, _crc_byte(out, meta))
    with pytest.raises(IndexFileError, match="damaged"):
        _map(out, out, check_crc=True)


def _crc_byte(path, meta):
    """The file offset of the crc column's first byte."""
    from cloudrec.dataset.table_file import HEADER_BYTES, _align
    with open(path, "rb") as fh:
        mlen = HEADER.unpack(fh.read(HEADER.size))[6]
    return HEADER_BYTES + _align(mlen) + meta["columns"]["crc"][0]


def test_a_local_byte_changed_after_the_table_is_an_error_naming_the_record(tmp_path):
    urls, truth = write_synthetic(_folder(tmp_path), 2, 25, seed=7, min_size=500, max_size=2000)
    out = str(tmp_path / "t.crtable")
    write_table(urls, out, crc=True)
    ds = open_dataset(urls, table=out)
    t = ds.table
    rid = int(np.flatnonzero(t.shard == 1)[10])
    _flip_in_place(urls[1], int(t.offset[rid]) + 30)
    ds = open_dataset(urls, table=out)         # the listing still matches: size and mtime kept
    with RecordFetcher(ds) as f:
        got = []
        with pytest.raises(ChecksumMismatchError) as ei:
            for r, p in f.fetch(range(len(t))):
                got.append(r)
    msg = str(ei.value)
    assert f"record id {rid} " in msg and urls[1] in msg and f"[{int(t.offset[rid])}," in msg
    assert got == list(range(rid))            # every record before it was handed out, none after


@pytest.mark.s3
def test_a_byte_flipped_on_a_ranged_read_is_read_again_and_healed(s3_server, fault_proxy, tmp_path):
    bucket = s3_server.new_bucket("crcflip")
    urls, truth = write_synthetic(bucket, 2, 40, seed=8, min_size=3000, max_size=7000,
                                  storage_options=s3_server.storage_options)
    so = fault_proxy.storage_options
    out = str(tmp_path / "t.crtable")
    write_table(urls, out, so, crc=True)
    # without the table's CRCs the flipped byte would reach the caller unnoticed
    plain = open_dataset(urls, storage_options=so)
    fault_proxy.configure(pflip=1.0, methods="GET", max_faults=1)
    with RecordFetcher(plain) as f:
        got = dict(f.fetch(range(len(plain))))
    assert fault_proxy.stats()["flip"] == 1
    assert sum(got[r] != truth[(int(plain.table.shard[r]), int(plain.table.key[r]))]
               for r in got) == 1
    ds = open_dataset(urls, storage_options=so, table=out)
    fault_proxy.configure(pflip=1.0, methods="GET", max_faults=1)
    with RecordFetcher(ds) as f:
        got = dict(f.fetch(range(len(ds))))
        assert f.stats["records_reread"] == 1
    assert fault_proxy.stats()["flip"] == 1
    assert all(got[r] == truth[(int(ds.table.shard[r]), int(ds.table.key[r]))] for r in got)
    assert len(got) == 80
    # every answer flipped: the second read does not match either
    fault_proxy.configure(pflip=1.0, methods="GET")
    with RecordFetcher(ds) as f:
        with pytest.raises(ChecksumMismatchError, match=r"record id \d+ .*crcflip-[0-9a-f]+/train-000"):
            list(f.fetch(range(len(ds))))


@pytest.fixture
def http_proxy(tmp_path):
    """nginx serving ``tmp_path/www`` on loopback, behind a FaultProxy: (root, proxy)."""
    from cloudrec.testing.nginx import NginxServer
    root = tmp_path / "www"
    root.mkdir()
    with NginxServer(root, start_timeout=60) as server, FaultProxy(server.url) as proxy:
        yield root, proxy


@pytest.mark.parametrize("stream", [False, True], ids=["published", "streamed"])
def test_a_cache_entry_of_a_store_without_checksums_is_dropped_when_a_record_is_wrong(
        http_proxy, tmp_path, monkeypatch, stream):
    from cloudrec.reader.cached import CacheHook
    from cloudrec.reader.record_check import RecordCheck
    monkeypatch.setattr(CacheHook, "stream", stream)
    if stream:   # HTTP GETs do not stream: 256 KB chunks one at a time, so records are read
        import cloudrec.storage.cache_download as cd   # while later chunks still download
        monkeypatch.setattr(cd, "WHOLE_CHUNK", 256 << 10)
        monkeypatch.setattr(cd, "DOWNLOAD_WINDOW", 1)
    running = []   # per mismatch outside a published entry: was its download still running?
    later = RecordCheck._drop_when_published
    monkeypatch.setattr(RecordCheck, "_drop_when_published", lambda self, shard_no, url: (
        running.append(not self.f._cache._paths[shard_no].done()), later(self, shard_no, url)))
    root, proxy = http_proxy
    # one shard, so the one flipped answer is surely a chunk of its download
    local, truth = write_synthetic(str(root), 1, 80, seed=9, min_size=20_000, max_size=40_000)
    urls = [proxy.endpoint_url + "/" + os.path.basename(u) for u in local]
    out = str(tmp_path / "t.crtable")
    write_table(local, out, crc=True)        # CRCs from the files themselves
    ds = open_dataset(urls)
    # the same shards' CRCs (an HTTP folder cannot be listed, so its table would be stale)
    ds.table = dataclasses.replace(ds.table, crc=open_dataset(local, table=out).table.crc)
    t = ds.table
    cache_dir = str(tmp_path / "cache")
    # the shard's download (HTTP: no checksum) gets one byte inverted, paced so that with
    # streaming its records are read while it runs
    proxy.configure(pflip=1.0, methods="GET", max_faults=1, mb_per_s=2 if stream else 0)
    order = np.arange(len(t))
    with pytest.warns(RuntimeWarning, match="does not match the dataset table's CRC32"):
        with RecordFetcher(ds, cache="shards", cache_dir=cache_dir, concurrency=1) as f:
            got = dict(f.fetch(order))
            assert f.stats["records_reread"] == 1
            downloads = f.stats["cache_downloads"]
    assert proxy.stats()["flip"] == 1
    if stream:   # the wrong record was read from the partial file of the download
        assert running == [True]
    assert all(got[r] == truth[(0, int(t.key[r]))] for r in got) and len(got) == 80
    proxy.configure()
    with RecordFetcher(ds, cache="shards", cache_dir=cache_dir) as f:   # the bad entry is gone
        again = dict(f.fetch(order))
        assert f.stats["records_reread"] == 0
        assert f.stats["cache_downloads"] == 1 and downloads == 1
    assert again == got


def test_the_table_is_a_fetch_option_of_config_files_too(tmp_path):
    from cloudrec.config import config_from_dict
    from cloudrec.errors import ConfigError
    from cloudrec.options import FetchOptions
    cfg = config_from_dict({"data": {"path_imgrec": "a.rec"},
                            "storage": {"fetch": {"table": "s3://b/t.crtable",
                                                  "table_stale": "error"}}})
    fo = cfg.iterator_kwargs()["fetch_options"]
    assert fo["table"] == "s3://b/t.crtable" and fo["table_stale"] == "error"
    assert "table" not in FetchOptions(table="t").fetcher_kwargs(["a.rec"])
    with pytest.raises(ConfigError, match="table must be the path or URL"):
        FetchOptions(table=3)
    with pytest.raises(ConfigError, match="table_stale"):
        FetchOptions(table="t", table_stale="ignore")


def test_index_check_audits_a_table_against_its_shards(tmp_path, capsys):
    urls, _ = write_synthetic(_folder(tmp_path), 2, 30, seed=10, min_size=500, max_size=2000)
    out = str(tmp_path / "t.crtable")
    write_table(urls, out, crc=True)
    assert main(["index", "--table", out, "--check", *urls]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: matches its shards"
    t = open_dataset(urls, table=out).table
    bad = [int(np.flatnonzero(t.shard == 1)[k]) for k in (3, 17)]
    for rid in bad:                                   # bytes changed in place, mtime kept
        _flip_in_place(urls[1], int(t.offset[rid]) + 25)
    assert main(["index", "--table", out, "--check", *urls]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(f"record id {rid} ({urls[1]}, key" in line
                                   for rid, line in zip(bad, lines))
    assert main(["index", "--table", out, "--check", urls[0]]) == 1   # other shards
    assert "the table is for other shards" in capsys.readouterr().out
    plain = str(tmp_path / "plain.crtable")                           # no CRCs: .idx facts only
    write_table(urls, plain)
    assert main(["index", "--table", plain, "--check", *urls]) == 0
    idx = urls[0][:-4] + ".idx"
    lines = open(idx).read().splitlines()
    key, off = lines[0].split("\t")
    with open(idx, "w") as fh:                    # another key for the first record
        fh.write("\n".join([f"99999\t{off}"] + lines[1:]) + "\n")
    assert main(["index", "--table", plain, "--check", *urls]) == 1
    assert "1 record(s) have another key in the .idx files, the first record id 0: " \
           f"{key} in the table, 99999 now" in capsys.readouterr().out


def test_a_table_option_with_a_dataset_already_open_is_refused(tmp_path):
    pytest.importorskip("torch")   # the optional torch extra; CI installs it
    from cloudrec.errors import ConfigError
    from cloudrec.torch import RecordIterableDataset
    urls, _ = write_synthetic(_folder(tmp_path), 1, 5, seed=11)
    with pytest.raises(ConfigError, match="open_dataset"):
        RecordIterableDataset(open_dataset(urls), fetch_options={"table": "t.crtable"})
