"""open_dataset on local disk and memory://: URL expansion, the record table, bad input."""
import os

import numpy as np
import pytest

from cloudrec.dataset import expand_braces, open_dataset, sibling_idx
from cloudrec.dataset.synthetic import build_shard, write_synthetic
from cloudrec.errors import IndexFileError, StorageError
from cloudrec.format.framing import encode_record


@pytest.fixture(params=["local", "memory"])
def base(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path)
        return
    import fsspec
    url = f"memory://ds-{os.getpid()}-{abs(hash(request.node.name))}"
    yield url
    fsspec.filesystem("memory").rm(url.split("://")[1], recursive=True)


def test_brace_expansion():
    assert expand_braces("s3://b/t-{0000..0003}.rec") == [f"s3://b/t-{i:04d}.rec" for i in range(4)]
    assert expand_braces("x{8..10}y") == ["x8y", "x9y", "x10y"]
    assert expand_braces("{a,b}-{0..1}") == ["a-0", "a-1", "b-0", "b-1"]
    assert sibling_idx("hdfs://h:1/d/x.rec") == "hdfs://h:1/d/x.idx"


def test_table_matches_what_was_written(base):
    urls, truth = write_synthetic(base, 3, 50, seed=1)
    for spec in (base + "/train-*.rec", base + "/train-{0000..0002}.rec", urls, urls[0]):
        ds = open_dataset(spec)
        n_shards = 1 if spec is urls[0] else 3
        assert len(ds.shards) == n_shards and len(ds) == 50 * n_shards
        t = ds.table
        assert t.shard.dtype == np.int32 and t.key.dtype == np.int64
        assert t.offset.dtype == np.int64 and t.length.dtype == np.int64
        assert t.key.tolist() == list(range(50 * n_shards))
        assert t.shard.tolist() == sum(([s] * 50 for s in range(n_shards)), [])
        for s, sh in enumerate(ds.shards):
            m = t.shard == s
            # spans tile the shard exactly
            assert t.offset[m][0] == 0 and (t.offset[m] + t.length[m])[-1] == sh.size
            assert (t.offset[m][1:] == (t.offset[m] + t.length[m])[:-1]).all()
            assert sh.idx_url == sibling_idx(sh.rec_url) and sh.version
        assert [sh.rec_url for sh in ds.shards] == urls[:n_shards]
        # lengths equal each record's encoded size
        for rid in (0, 7, len(ds) - 1):
            s, k = int(t.shard[rid]), int(t.key[rid])
            assert t.length[rid] == len(encode_record(truth[(s, k)]))


def test_index_urls_given_as_glob_or_list(base):
    urls, _ = write_synthetic(base, 3, 10, seed=6, name="d-{:02d}")
    import fsspec
    fs, p = fsspec.core.url_to_fs(base)
    fs.makedirs(p + "/idx", exist_ok=True)
    for i in range(3):
        fs.mv(p + f"/d-{i:02d}.idx", p + f"/idx/d-{i:02d}.idx")
    with pytest.raises(IndexFileError, match="d-00.idx"):
        open_dataset(base + "/d-*.rec")
    a = open_dataset(base + "/d-*.rec", idx_urls=base + "/idx/d-*.idx")
    b = open_dataset(urls, idx_urls=[base + f"/idx/d-{i:02d}.idx" for i in range(3)])
    assert len(a) == len(b) == 30 and (a.table.offset == b.table.offset).all()
    assert [s.idx_url for s in a.shards] == [base + f"/idx/d-{i:02d}.idx" for i in range(3)]


def test_scan_without_idx_gives_same_offsets(base):
    urls, _ = write_synthetic(base, 2, 40, seed=2, name="noidx-{:02d}", write_idx=False)
    with pytest.raises(IndexFileError, match="noidx-00.idx"):
        open_dataset(urls)
    ds = open_dataset(urls, require_index=False)
    write_synthetic(base, 2, 40, seed=2, name="withidx-{:02d}")
    ref = open_dataset(base + "/withidx-*.rec")
    assert (ds.table.offset == ref.table.offset).all()
    assert (ds.table.length == ref.table.length).all()
    assert ds.table.key.tolist() == list(range(40)) * 2


def test_scan_across_chunk_boundaries(tmp_path, monkeypatch):
    import cloudrec.dataset.table as table
    monkeypatch.setattr(table, "SCAN_CHUNK", 64)
    urls, _ = write_synthetic(str(tmp_path), 1, 60, seed=3, max_size=90, write_idx=False)
    write_synthetic(str(tmp_path), 1, 60, seed=3, max_size=90, name="ref-{:04d}")
    ds = open_dataset(urls, require_index=False)
    ref = open_dataset(str(tmp_path / "ref-0000.rec"))
    assert ds.table.offset.tolist() == ref.table.offset.tolist()


def test_string_keys(base):
    rec, idx = build_shard([b"a", b"bb", b"ccc"], ["x", "y", "z"])
    import fsspec
    fs, p = fsspec.core.url_to_fs(base)
    fs.pipe_file(p + "/s.rec", rec)
    fs.pipe_file(p + "/s.idx", idx)
    ds = open_dataset(base + "/s.rec")
    assert ds.table.key.dtype == object and ds.table.key.tolist() == ["x", "y", "z"]


def test_bad_input_names_the_url(base):
    urls, _ = write_synthetic(base, 1, 10, seed=4)
    with pytest.raises(StorageError, match="missing.rec"):
        open_dataset(base + "/missing.rec")
    with pytest.raises(FileNotFoundError):
        open_dataset(base + "/missing.rec")
    with pytest.raises(StorageError, match="nomatch-"):
        open_dataset(base + "/nomatch-*.rec")
    with pytest.raises(IndexFileError, match="other.idx"):
        open_dataset(urls[0], idx_urls=[base + "/other.idx"])
    # an .idx that points past the .rec
    import fsspec
    fs, p = fsspec.core.url_to_fs(base)
    fs.pipe_file(p + "/short.rec", fs.cat_file(p + "/train-0000.rec")[:100])
    fs.pipe_file(p + "/short.idx", fs.cat_file(p + "/train-0000.idx"))
    with pytest.raises(IndexFileError, match=r"short\.idx.*") as ei:
        open_dataset(base + "/short.rec")
    assert "past the end" in str(ei.value) and "short.rec" in str(ei.value)


def test_empty_dataset_and_pickle(base):
    import pickle
    rec, idx = build_shard([], [])
    import fsspec
    fs, p = fsspec.core.url_to_fs(base)
    fs.pipe_file(p + "/e.rec", rec)
    fs.pipe_file(p + "/e.idx", idx)
    ds = open_dataset(base + "/e.rec")
    assert len(ds) == 0
    urls, _ = write_synthetic(base, 2, 5, seed=5)
    ds = open_dataset(urls)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert len(ds2) == 10 and ds2.filesystem(1)[1].endswith("train-0001.rec")
