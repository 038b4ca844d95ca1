"""http:// through fsspec's HTTPFileSystem against Debian's nginx on 127.0.0.1 (tcp_nopush off):
explicit URLs and brace ranges (plain http cannot list, so no glob), shuffled fetch with exact
bytes, exact ranges, scan without .idx, cache mode, missing shard / .idx errors naming the URL,
MXIndexedRecordIO reads.  If nginx cannot start here, these tests fail with its error."""
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import test_storage_backends as suite
from cloudrec.dataset import open_dataset
from cloudrec.errors import IndexFileError, StorageError
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.recordio import MXIndexedRecordIO
from cloudrec.storage.fs import resolve
from cloudrec.testing.nginx import NginxServer

START_LIMIT_S = 60.0


class HttpDirStore:
    """The suite's Store interface over a folder nginx serves: written on disk, read by URL."""

    name = "http"
    storage_options: dict = {}

    def __init__(self, root: Path, base_url: str) -> None:
        self.root, self.base_url = root, base_url.rstrip("/")
        self.root.mkdir(parents=True, exist_ok=True)

    def url(self, relpath: str = "") -> str:
        return f"{self.base_url}/{relpath}" if relpath else self.base_url

    def put(self, relpath: str, data: bytes) -> str:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, path)  # a changed object gets a new mtime/size, hence a new ETag
        return self.url(relpath)

    def get(self, relpath: str) -> bytes:
        return (self.root / relpath).read_bytes()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    with NginxServer(root, start_timeout=START_LIMIT_S) as server:
        yield server


@pytest.fixture
def http_store(nginx):
    sub = f"d-{uuid.uuid4().hex[:8]}"
    return HttpDirStore(nginx.root / sub, nginx.url_of(sub))


def test_nginx_starts_within_a_minute_and_serves_ranges_fast(nginx, http_store):
    print(f"\nnginx: up in {nginx.startup_seconds:.3f} s at {nginx.url}, pid {nginx.pids}")
    assert nginx.url.startswith("http://127.0.0.1:") and nginx.startup_seconds < START_LIMIT_S
    assert sorted(nginx.pids) == ["nginx"]
    blob = np.random.default_rng(0).bytes(1 << 16)
    url = http_store.put("blob.bin", blob)
    fs, path = resolve(url)
    t0 = time.perf_counter()
    for i in range(50):
        assert fs.cat_file(path, start=i * 1000, end=i * 1000 + 517) == blob[i * 1000:i * 1000 + 517]
    per_ms = (time.perf_counter() - t0) / 50 * 1e3
    print(f"nginx: {per_ms:.2f} ms per ranged read")
    assert per_ms < 30  # with tcp_nopush on each small ranged read waits ~40 ms


@pytest.mark.parametrize("case", [suite.test_range_reader_exact_bytes, suite.test_scan_without_index,
                                  suite.test_cache_mode], ids=lambda c: c.__name__[5:])
def test_storage_suite_on_nginx(http_store, case, tmp_path):
    if case is suite.test_cache_mode:
        case(http_store, tmp_path)
    else:
        case(http_store)


def test_explicit_urls_brace_and_shuffled_fetch(http_store):
    urls, truth = suite._write(http_store, n_shards=3, per=40, seed=21)
    ds = open_dataset(urls)
    ds2 = open_dataset(http_store.url("train-{0000..0002}.rec"))
    assert [s.rec_url for s in ds.shards] == urls == [s.rec_url for s in ds2.shards]
    assert all(u.startswith("http://127.0.0.1:") for u in urls)
    assert len(ds) == 120 and all(s.version for s in ds.shards)
    assert [s.size for s in ds.shards] == [len(http_store.get(f"train-{i:04d}.rec")) for i in range(3)]
    order = np.random.default_rng(3).permutation(len(ds))
    for kw in ({}, {"max_gap": -1, "concurrency": 4}, {"max_request": 3000}):
        with RecordFetcher(ds, **kw) as f:
            suite._check(ds, truth, list(f.fetch(order)), order.tolist())
    # ranges straight from the record table are the framed records, byte for byte
    raw = http_store.get("train-0001.rec")
    fs, path = resolve(urls[1])
    rows = np.flatnonzero(ds.table.shard == 1)[[0, 13, 39]]
    starts = [int(ds.table.offset[r]) for r in rows]
    ends = [int(ds.table.offset[r] + ds.table.length[r]) for r in rows]
    assert fs.cat_ranges([path] * 3, starts, ends) == [raw[a:b] for a, b in zip(starts, ends)]


def test_missing_shard_and_idx_name_the_url(http_store):
    urls, _ = suite._write(http_store, n_shards=2, per=5, seed=22)
    missing = http_store.url("train-0009.rec")
    with pytest.raises(StorageError) as ei:
        open_dataset([urls[0], missing])
    assert missing in str(ei.value) and isinstance(ei.value, FileNotFoundError)
    (http_store.root / "train-0001.idx").unlink()
    with pytest.raises(IndexFileError) as ei:
        open_dataset(urls)
    assert http_store.url("train-0001.idx") in str(ei.value)
    with pytest.raises(IndexFileError, match="other.idx"):
        open_dataset(urls[0], idx_urls=[http_store.url("other.idx")])


def test_indexed_recordio_read(http_store):
    rng = np.random.default_rng(23)
    payloads = {k: rng.bytes(int(rng.integers(0, 3000))) for k in range(50)}
    w = MXIndexedRecordIO(str(http_store.root / "data.idx"), str(http_store.root / "data.rec"), "w")
    for k, p in payloads.items():
        w.write_idx(k, p)
    w.close()
    r = MXIndexedRecordIO(http_store.url("data.idx"), http_store.url("data.rec"), "r")
    assert sorted(r.keys) == list(payloads)
    for k in rng.permutation(50).tolist():
        assert r.read_idx(k) == payloads[k], k
    r.close()
    seq = MXIndexedRecordIO(http_store.url("data.idx"), http_store.url("data.rec"), "r")
    assert [seq.read() for _ in range(50)] == list(payloads.values())
    assert seq.read() is None
    seq.close()
    with pytest.raises(FileNotFoundError, match="nothing.rec"):
        MXIndexedRecordIO(http_store.url("data.idx"), http_store.url("nothing.rec"), "r")


def test_failed_start_raises_with_the_log(nginx, tmp_path):
    with pytest.raises(Exception) as ei:
        NginxServer(tmp_path, port=nginx.port, start_timeout=START_LIMIT_S).start()
    assert "nginx" in str(ei.value) and "Address already in use" in str(ei.value)
