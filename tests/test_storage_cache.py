"""ShardCache: download once per node, atomic completion, versioned keys, the cap, the CLI."""
import multiprocessing as mp
import os
import signal
import time

import pytest

from cloudrec.errors import StorageError
from cloudrec.storage.cache import ShardCache, default_cache_dir


def _writer(data, delay=0.0, log=None):
    def download(tmp):
        if log is not None:
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        with open(tmp, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            time.sleep(delay)
            fh.write(data[half:])
    return download


def test_default_dir_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDREC_CACHE_DIR", str(tmp_path / "env"))
    assert ShardCache().dir == str(tmp_path / "env")
    assert ShardCache(str(tmp_path / "arg")).dir == str(tmp_path / "arg")
    monkeypatch.delenv("CLOUDREC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "cloudrec" / "shards")


def test_get_downloads_once_then_hits(tmp_path):
    c = ShardCache(str(tmp_path), max_bytes=1 << 20)
    data = os.urandom(5000)
    p = c.get("s3://b/x.rec", 5000, "etag1", _writer(data))
    assert open(p, "rb").read() == data
    assert c.get("s3://b/x.rec", 5000, "etag1", _writer(b"wrong" * 1000)) == p
    assert (c.downloads, c.hits) == (1, 1)
    [e] = c.entries()
    assert (e.url, e.size, e.version) == ("s3://b/x.rec", 5000, "etag1")


def test_changed_object_is_fetched_anew_and_old_version_dropped(tmp_path):
    c = ShardCache(str(tmp_path), max_bytes=1 << 20)
    old, new = os.urandom(100), os.urandom(120)
    p1 = c.get("s3://b/x.rec", 100, "etag1", _writer(old))
    p2 = c.get("s3://b/x.rec", 120, "etag2", _writer(new))
    assert p1 != p2 and open(p2, "rb").read() == new
    assert not os.path.exists(p1)
    # same size, new ETag: still a new download
    newer = os.urandom(120)
    p3 = c.get("s3://b/x.rec", 120, "etag3", _writer(newer))
    assert open(p3, "rb").read() == newer and c.downloads == 3
    assert [e.version for e in c.entries()] == ["etag3"]


def test_short_or_failed_download_leaves_nothing(tmp_path):
    c = ShardCache(str(tmp_path), max_bytes=1 << 20)
    with pytest.raises(StorageError, match="99 of 100"):
        c.get("s3://b/x.rec", 100, "e", _writer(os.urandom(99)))

    def boom(tmp):
        open(tmp, "wb").write(b"partial")
        raise ConnectionResetError("reset")
    with pytest.raises(ConnectionResetError):
        c.get("s3://b/x.rec", 100, "e", boom)
    assert c.entries() == [] and not [n for n in os.listdir(tmp_path) if ".tmp." in n]
    assert c.lookup("s3://b/x.rec", 100, "e") is None


def _slow_get(cache_dir, data, log):
    c = ShardCache(cache_dir, max_bytes=1 << 20)
    c.get("s3://b/slow.rec", len(data), "v", _writer(data, delay=5.0, log=log))


def test_killed_download_leaves_nothing_that_is_read(tmp_path):
    data = os.urandom(4000)
    ctx = mp.get_context("spawn")  # no fork of a threaded pytest process
    p = ctx.Process(target=_slow_get, args=(str(tmp_path), data, str(tmp_path / "log")))
    p.start()
    for _ in range(600):  # wait until it is half-way through writing
        if [n for n in os.listdir(tmp_path) if ".tmp." in n]:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the download never started")
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    c = ShardCache(str(tmp_path), max_bytes=1 << 20)
    assert c.lookup("s3://b/slow.rec", 4000, "v") is None and c.entries() == []
    # the lock died with the process; the next get downloads the full object
    path = c.get("s3://b/slow.rec", 4000, "v", _writer(data))
    assert open(path, "rb").read() == data
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]


def _proc_get(cache_dir, data, log, q):
    c = ShardCache(cache_dir, max_bytes=1 << 20)
    path = c.get("s3://b/shared.rec", len(data), "v", _writer(data, delay=0.5, log=log))
    q.put((c.downloads, open(path, "rb").read() == data))


def test_two_processes_download_once(tmp_path):
    data = os.urandom(10000)
    ctx = mp.get_context("spawn")  # no fork of a threaded pytest process
    q = ctx.Queue()
    log = str(tmp_path / "downloads.log")
    ps = [ctx.Process(target=_proc_get, args=(str(tmp_path / "c"), data, log, q))
          for _ in range(3)]
    for p in ps:
        p.start()
    res = [q.get(timeout=30) for _ in ps]
    for p in ps:
        p.join()
    assert sorted(r[0] for r in res) == [0, 0, 1] and all(r[1] for r in res)
    assert len(open(log).read().split()) == 1


def test_cap_holds_with_lru_eviction(tmp_path):
    c = ShardCache(str(tmp_path), max_bytes=3000)
    blobs = {f"s3://b/{i}.rec": os.urandom(1000) for i in range(5)}
    urls = list(blobs)
    for u in urls[:3]:
        c.get(u, 1000, "v", _writer(blobs[u]))
        time.sleep(0.02)
    assert c.total_bytes() == 3000
    c.get(urls[0], 1000, "v", _writer(blobs[urls[0]]))  # touch 0: now 1 is least recent
    time.sleep(0.02)
    c.get(urls[3], 1000, "v", _writer(blobs[urls[3]]))
    assert c.total_bytes() <= 3000
    assert sorted(e.url for e in c.entries()) == sorted([urls[0], urls[2], urls[3]])
    with pytest.raises(StorageError, match="does not fit"):
        c.get("s3://b/big.rec", 3001, "v", _writer(os.urandom(3001)))
    for u in urls:
        c.get(u, 1000, "v", _writer(blobs[u]))
        assert c.total_bytes() <= 3000
    for e in c.entries():
        assert open(e.path, "rb").read() == blobs[e.url]


def test_cli_ls_and_clear(tmp_path, capsys):
    from cloudrec.cli import main
    c = ShardCache(str(tmp_path), max_bytes=1 << 20)
    c.get("s3://b/a.rec", 10, "v", _writer(b"0123456789"))
    c.get("s3://b/b.rec", 3, "v", _writer(b"abc"))
    assert main(["cache", "--dir", str(tmp_path), "ls"]) == 0
    out = capsys.readouterr().out
    assert "s3://b/a.rec" in out and "s3://b/b.rec" in out and "2 shard(s), 13 bytes" in out
    assert main(["cache", "--dir", str(tmp_path), "clear", "s3://b/a.rec"]) == 0
    assert [e.url for e in c.entries()] == ["s3://b/b.rec"]
    assert main(["cache", "--dir", str(tmp_path), "clear"]) == 0
    assert "removed 1 shard(s)" in capsys.readouterr().out and c.entries() == []
