"""im2rec, index and inspect from a bucket into a bucket: local disk, loopback S3
(moto) and loopback HDFS through the shared `store` fixture, plus packing with a
Dask LocalCluster of 2 workers straight into S3."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloudrec import cli
from cloudrec.errors import RecordIOError
from cloudrec.recordio import MXIndexedRecordIO, MXRecordIO
from cloudrec.tools.index import rebuild_index
from cloudrec.tools.inspect import inspect
from cloudrec.tools.packing import PackError

FIX = Path(__file__).parent / "fixtures" / "mxnet"
IMAGES = FIX / "images"
PASS = FIX / "pack" / "passthrough"


def _upload_images(store, rel="images"):
    files = sorted(IMAGES.rglob("*.*"))
    if store.name != "s3":  # folders first, then the files concurrently
        for d in sorted({p.parent.relative_to(IMAGES).as_posix() for p in files}):
            store.fs.makedirs(store.path(rel if d == "." else f"{rel}/{d}"), exist_ok=True)
    with ThreadPoolExecutor(8) as pool:  # an HDFS file close takes ~0.4 s
        list(pool.map(lambda p: store.put(f"{rel}/{p.relative_to(IMAGES).as_posix()}",
                                          p.read_bytes()), files))
    return store.url(rel)


def _so(store):
    return ["--storage-options", json.dumps(store.storage_options)]


def test_list_and_pack_bucket_to_bucket(store, capsys):
    root = _upload_images(store)
    store.put("out/.keep", b"")  # HDFS/local need the folder; S3 does not care
    assert cli.main(["im2rec", "--list", "--recursive", *_so(store), store.url("out/all"),
                     root]) == 0
    assert capsys.readouterr().out == (FIX / "im2rec" / "all.stdout").read_text()
    assert store.get("out/all.lst") == (FIX / "im2rec" / "all.lst").read_bytes()
    assert cli.main(["im2rec", "--pass-through", "--num-thread", "4", "--no-progress", *_so(store),
                     store.url("out/all"), root]) == 0
    assert store.get("out/all.rec") == (PASS / "all.rec").read_bytes()
    assert store.get("out/all.idx") == (PASS / "all.idx").read_bytes()
    assert store.listdir("out") == [".keep", "all.idx", "all.lst", "all.rec"]
    # the index tool rebuilds the same .idx from the remote .rec in small ranged chunks
    data, n, used = rebuild_index(store.url("out/all.rec"), store.storage_options,
                                  chunk_size=4096)
    assert data == (PASS / "all.idx").read_bytes() and n == 24
    s = inspect(store.url("out/all.rec"), storage_options=store.storage_options, sample=0,
                grid=store.url("out/sheet.png"), grid_n=8, cell=32)
    assert s.records == 24 and s.label_histogram == {"0": 8, "1": 8, "2": 8}
    assert store.get("out/sheet.png")[:4] == b"\x89PNG"


def test_resize_shards_to_store_and_failure_leaves_nothing(store):
    root = _upload_images(store)
    store.put("out/all.lst", (PASS / "all.lst").read_bytes())
    assert cli.main(["im2rec", "--resize", "32", "--num-shards", "2", "--num-thread", "2",
                     "--no-progress", *_so(store), store.url("out/all"), root]) == 0
    names = store.listdir("out")
    assert names == ["all-00000-of-00002.idx", "all-00000-of-00002.rec",
                     "all-00001-of-00002.idx", "all-00001-of-00002.rec", "all.lst",
                     "all.manifest.json"]
    n = 0
    for i in range(2):
        stem = store.url("out/all-%05d-of-00002" % i)
        with MXIndexedRecordIO(stem + ".idx", stem + ".rec", "r",
                               storage_options=store.storage_options) as r:
            n += len(r.keys)
    assert n == 24
    # a list naming a missing image: the run fails and leaves no new file at all
    store.put("bad/b.lst", (PASS / "all.lst").read_bytes() + b"99\t0.000000\tnope/missing.jpg\n")
    with pytest.raises(PackError, match="missing.jpg"):
        from cloudrec.tools import im2rec
        p = __import__("argparse").ArgumentParser()
        im2rec.add_arguments(p)
        im2rec.run(p.parse_args(["--pass-through", "--num-shards", "2", "--no-progress", *_so(store),
                                 store.url("bad/b"), root]))
    assert store.listdir("bad") == ["b.lst"]


@pytest.mark.s3
def test_dask_local_cluster_packs_into_s3(s3_server, tmp_path):
    """Two Dask workers each write their shards straight into the bucket."""
    bucket = s3_server.new_bucket()
    so = s3_server.storage_options
    lst = tmp_path / "all.lst"
    lst.write_bytes((PASS / "all.lst").read_bytes())
    from cloudrec.storage.fs import resolve
    fs, _ = resolve(bucket, so)
    fs.pipe_file(bucket.split("://")[1] + "/data/all.lst", lst.read_bytes())
    assert cli.main(["im2rec", "--pass-through", "--engine", "dask", "--dask-workers", "2",
                     "--num-shards", "4", "--no-progress", "--storage-options", json.dumps(so),
                     f"{bucket}/data/all", str(IMAGES)]) == 0
    got = []
    for i in range(4):
        stem = f"{bucket}/data/all-%05d-of-00004" % i
        with MXIndexedRecordIO(stem + ".idx", stem + ".rec", "r", storage_options=so) as r:
            got.extend(r.read_idx(k) for k in r.keys)
    assert got == list(MXRecordIO(str(PASS / "all.rec"), "r"))
    fs.invalidate_cache()
    assert not [p for p in fs.find(bucket.split("://")[1]) if ".tmp-" in p]


@pytest.mark.s3
def test_dask_failure_commits_nothing(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    so = s3_server.storage_options
    from cloudrec.storage.fs import resolve
    fs, _ = resolve(bucket, so)
    b = bucket.split("://")[1]
    fs.pipe_file(f"{b}/d/all.lst", (PASS / "all.lst").read_bytes()
                 + b"99\t0.000000\tnope/missing.jpg\n")
    assert cli.main(["im2rec", "--pass-through", "--engine", "dask", "--num-shards", "3",
                     "--no-progress", "--storage-options", json.dumps(so), f"{bucket}/d/all",
                     str(IMAGES)]) == 1
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(b)) == ["all.lst"]
    # with --on-error skip the same list packs 24 of 25 and lists the missing one
    assert cli.main(["im2rec", "--pass-through", "--engine", "dask", "--num-shards", "3",
                     "--on-error", "skip", "--no-progress", "--storage-options", json.dumps(so),
                     f"{bucket}/d/all", str(IMAGES)]) == 0
    fs.invalidate_cache()
    report = fs.cat_file(f"{b}/d/all.errors.tsv").decode()
    assert "nope/missing.jpg" in report and len(report.splitlines()) == 2


def test_truncated_remote_rec_is_an_error(store):
    data = (PASS / "all.rec").read_bytes()
    store.put("t/all.rec", data[: len(data) - 100])
    with pytest.raises(RecordIOError) as ei:
        rebuild_index(store.url("t/all.rec"), store.storage_options, chunk_size=4096)
    assert "all.rec" in str(ei.value) and ei.value.offset is not None


def test_repacking_replaces_previous_outputs(store):
    root = _upload_images(store)
    store.put("out/all.lst", (PASS / "all.lst").read_bytes())
    args = ["im2rec", "--no-progress", *_so(store), store.url("out/all"), root]
    assert cli.main(["im2rec", "--resize", "24", *args[1:]]) == 0
    first = store.get("out/all.rec")
    assert cli.main(["im2rec", "--pass-through", *args[1:]]) == 0
    assert store.get("out/all.rec") == (PASS / "all.rec").read_bytes() != first
    assert store.get("out/all.idx") == (PASS / "all.idx").read_bytes()
    assert cli.main(["index", "--force", *_so(store), store.url("out/all.rec")]) == 0
    assert store.get("out/all.idx") == (PASS / "all.idx").read_bytes()
    assert store.listdir("out") == ["all.idx", "all.lst", "all.rec"]


def test_process_pool_reads_remote_root(store):
    """Worker processes open their own clients (a plain fork would hang on HDFS)."""
    root = _upload_images(store)
    store.put("out/all.lst", (PASS / "all.lst").read_bytes())
    assert cli.main(["im2rec", "--pass-through", "--num-thread", "2", "--pool", "process",
                     "--no-progress", *_so(store), store.url("out/all"), root]) == 0
    assert store.get("out/all.rec") == (PASS / "all.rec").read_bytes()
