"""A cache download whose process died is continued, not started again: the next holder of
the key's lock takes over the temp file and fetches only the pieces it lacks."""
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from cloudrec.storage import cache_files
from cloudrec.storage.cache import ShardCache
from cloudrec.storage.cache_progress import ProgressFile, partial_download, read_progress

PIECE = 1000
URL, VERSION = "s3://bucket/train-0000.rec", "ETag=abc"


def _dead_download(cache, data, runs, boot=None, name="tmp.99999.0"):
    """What a download killed mid-way leaves: a reserved temp file holding ``runs`` of
    ``data`` (zeros elsewhere) and a progress file marking them (written in ``boot``)."""
    key = cache.key(URL, len(data), VERSION)
    tmp = os.path.join(cache.dir, f"{key}.{name}")
    cache_files.reserve(tmp, len(data))
    with open(tmp, "r+b") as fh:
        for a, b in runs:
            fh.seek(a)
            fh.write(data[a:b])
    pf = ProgressFile(tmp, len(data), PIECE)
    for a, b in runs:
        pf.advance(a, b)
    pf.close()
    if boot is not None:   # the same files, as another boot of the kernel left them
        with open(pf.path, "rb") as fh:
            head, _, bits = fh.read().partition(b"\n")
        fields = head.split(b" ")
        fields[3] = f"{boot:x}".encode()
        with open(pf.path, "wb") as fh:
            fh.write(b" ".join(fields) + b"\n" + bits)
    return key, tmp


def _filler(data, calls):
    """A download that writes only what it is not given, recording what it was given."""
    def download(tmp, have=()):
        calls.append(list(have))
        covered = np.zeros(len(data), bool)
        for a, b in have:
            covered[a:b] = True
        with open(tmp, "r+b") as fh:
            for i in np.flatnonzero(~covered):
                fh.seek(int(i))
                fh.write(data[i:i + 1])
        return None
    return download


def test_a_dead_download_is_continued_from_the_pieces_it_wrote(tmp_path):
    cache = ShardCache(str(tmp_path))
    data = os.urandom(10 * PIECE + 123)
    runs = [(0, 3 * PIECE), (5 * PIECE, 6 * PIECE), (10 * PIECE, len(data))]
    key, tmp = _dead_download(cache, data, runs)
    assert partial_download(os.path.join(cache.dir, key + ".part"), len(data)) == (tmp, runs)
    calls = []
    path = cache.get(URL, len(data), VERSION, _filler(data, calls), resumable=True)
    assert calls == [runs]
    assert open(path, "rb").read() == data
    assert (cache.resumed, cache.downloads) == (1, 1)
    assert sorted(os.listdir(cache.dir)) == sorted(
        [f"{key}.{e}" for e in ("data", "json", "ok", "lock")] + [".evict.lock"])
    # the entry's checksum is of the whole file (read back: the dead pieces had none)
    assert ShardCache(str(tmp_path)).lookup(URL, len(data), VERSION) == path


@pytest.mark.parametrize("why", ["another boot", "not resumable", "nothing written",
                                 "wrong size"])
def test_a_dead_download_that_cannot_be_trusted_is_fetched_whole(tmp_path, why):
    cache = ShardCache(str(tmp_path))
    data = os.urandom(4 * PIECE)
    runs = [] if why == "nothing written" else [(0, 2 * PIECE)]
    key, tmp = _dead_download(cache, data, runs,
                              boot=(cache_files.BOOT_ID or 0) + 1 if why == "another boot" else None)
    if why == "wrong size":
        os.truncate(tmp, 3 * PIECE)
    calls = []
    download = _filler(data, calls)
    if why == "not resumable":
        path = cache.get(URL, len(data), VERSION, lambda t: download(t))
    else:
        path = cache.get(URL, len(data), VERSION, download, resumable=True)
    assert calls == [[]]          # asked for every byte
    assert open(path, "rb").read() == data
    assert cache.resumed == 0 and not os.path.exists(tmp)


def test_old_progress_files_without_a_boot_are_read_but_never_continued(tmp_path):
    """A progress file of the earlier three-field header (no boot id) still serves followers."""
    cache = ShardCache(str(tmp_path))
    data = os.urandom(3 * PIECE)
    key, tmp = _dead_download(cache, data, [(0, PIECE)])
    part = os.path.join(cache.dir, key + ".part")
    with open(part, "rb") as fh:
        head, _, bits = fh.read().partition(b"\n")
    with open(part, "wb") as fh:
        fh.write(b" ".join(head.split(b" ")[:3]) + b"\n" + bits)
    assert read_progress(part) == ([(0, PIECE)], tmp)
    assert partial_download(part, len(data)) is None


def _download_shard(urls, so, cache_dir):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "testing")
    from cloudrec.dataset import open_dataset
    from cloudrec.reader.fetch import RecordFetcher
    ds = open_dataset(urls, storage_options=so)
    f = RecordFetcher(ds, cache="shards", cache_dir=cache_dir)
    for _ in f.fetch(np.arange(len(ds))):
        pass


@pytest.mark.s3
def test_a_downloader_killed_mid_shard_leaves_only_the_rest_to_fetch(s3_server, fault_proxy,
                                                                      tmp_path):
    """SIGKILL the process downloading a shard (a DataLoader worker torn down): the next
    process fetches only the bytes the dead one had not written, and serves every record."""
    from cloudrec.dataset import open_dataset
    from cloudrec.dataset.synthetic import write_synthetic
    from cloudrec.reader.fetch import RecordFetcher
    bucket = s3_server.new_bucket("resume")
    urls, truth = write_synthetic(bucket, 1, 40, seed=35, min_size=60_000, max_size=80_000,
                                  storage_options=s3_server.storage_options)
    so = fault_proxy.storage_options
    cache_dir = str(tmp_path / "cache")
    fault_proxy.configure(mb_per_s=2)   # ~1.4 s for the ~2.8 MB shard
    child = mp.get_context("spawn").Process(target=_download_shard, args=(urls, so, cache_dir))
    child.start()
    ds = open_dataset(urls, storage_options=so)
    sh = ds.shards[0]
    key = ShardCache(cache_dir).key(sh.rec_url, sh.size, sh.version)
    part = os.path.join(cache_dir, key + ".part")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:   # until a quarter or more is on disk
        got = read_progress(part) if os.path.exists(part) else None
        if got is not None and sum(b - a for a, b in got[0]) >= sh.size // 4:
            break
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    have, _ = read_progress(part)
    on_disk = sum(b - a for a, b in have)
    assert sh.size // 4 <= on_disk < sh.size
    fault_proxy.configure()             # full speed, counts from zero
    f = RecordFetcher(ds, cache="shards", cache_dir=cache_dir)
    try:
        got = {rid: bytes(p) for rid, p in f.fetch(np.arange(len(ds)))}
        assert (f._cache.cache.resumed, f._cache.cache.downloads) == (1, 1)
    finally:
        f.close()
    assert got == {i: truth[(0, int(ds.table.key[i]))] for i in range(len(ds))}
    assert fault_proxy.traffic()["GET .rec"]["bytes"] == sh.size - on_disk
    assert ShardCache(cache_dir).lookup(sh.rec_url, sh.size, sh.version) is not None
    assert [n for n in os.listdir(cache_dir) if ".tmp." in n or n.endswith(".part")] == []
