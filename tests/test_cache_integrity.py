"""The shard cache notices corruption and keeps its promises under pressure (loopback S3):
a damaged entry (flipped bytes, same size) is dropped and downloaded again when a process
first opens it, never served; `cloudrec cache verify` finds it; entries held by readers
are not evicted, so the disk used (including open files) stays under the cap; a full disk
is a StorageError naming the folder; a read-only pre-filled folder serves its hits and
reads misses directly with one warning; `cache clear` leaves files it did not make."""
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
import warnings

import numpy as np
import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.storage.cache import ShardCache

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def dataset(s3_server):
    bucket = s3_server.new_bucket("integrity")
    urls, truth = write_synthetic(bucket, 4, 100, seed=71, min_size=2000, max_size=6000,
                                  storage_options=s3_server.storage_options)
    return urls, truth, s3_server.storage_options


def _right(ds, truth, got):
    return [r for r, p in got if p != truth[(int(ds.table.shard[r]), int(ds.table.key[r]))]]


def _fill(urls, so, cache_dir, q):
    """In a fresh process: one epoch with cache='shards' (downloads every shard)."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(k, "testing")
    ds = open_dataset(urls, storage_options=so)
    with RecordFetcher(ds, cache="shards", cache_dir=cache_dir) as f:
        n = sum(1 for _ in f.fetch(range(len(ds))))
        q.put((n, f.stats["cache_downloads"]))


def _fill_in_other_process(urls, so, cache_dir):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_fill, args=(urls, so, cache_dir, q))
    p.start()
    res = q.get(timeout=120)
    p.join(30)
    return res


def _flip(path, at=1000, n=16):
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(n)
        fh.seek(at)
        fh.write(bytes(x ^ 0xFF for x in b))


def test_damaged_entry_is_dropped_and_downloaded_again(dataset, tmp_path):
    urls, truth, so = dataset
    cdir = str(tmp_path / "cache")
    assert _fill_in_other_process(urls, so, cdir) == (400, 4)
    entries = {e.url: e for e in ShardCache(cdir).entries()}
    assert all(isinstance(e.crc32, int) for e in entries.values())
    size_before = os.path.getsize(entries[urls[2]].path)
    _flip(entries[urls[2]].path)  # same size, 16 bytes flipped
    assert os.path.getsize(entries[urls[2]].path) == size_before
    ds = open_dataset(urls, storage_options=so)
    order = np.random.default_rng(1).permutation(len(ds))
    with RecordFetcher(ds, cache="shards", cache_dir=cdir) as f:
        got = list(f.fetch(order))
        st = f.stats
    assert [r for r, _ in got] == order.tolist() and _right(ds, truth, got) == []
    assert (st["cache_corrupt"], st["cache_downloads"], st["cache_hits"]) == (1, 1, 3), st


def test_an_entry_verified_on_the_node_is_not_read_again_until_it_is_written(
        dataset, tmp_path, monkeypatch):
    """The first check leaves a stamp (inode, size, mtime, ctime) that the node's other
    processes trust instead of a new CRC of the whole shard; a write into the file moves
    its ctime, so the damage is still found; hits touch the .json, never the data file."""
    import time

    import cloudrec.storage.cache as cache_mod
    urls, truth, so = dataset
    cdir = str(tmp_path / "cache")
    assert _fill_in_other_process(urls, so, cdir) == (400, 4)
    assert sorted(n for n in os.listdir(cdir) if n.endswith(".ok")) == \
        sorted(os.path.basename(e.path)[:-5] + ".ok" for e in ShardCache(cdir).entries())
    crcs = []
    real = cache_mod.crc32_file
    monkeypatch.setattr(cache_mod, "crc32_file", lambda p: crcs.append(p) or real(p))
    cache_mod._VERIFIED.clear()   # as in a process of the node that never opened them
    ds = open_dataset(urls, storage_options=so)
    entries = {e.url: e for e in ShardCache(cdir).entries()}
    before = {u: os.stat(e.path) for u, e in entries.items()}
    with RecordFetcher(ds, cache="shards", cache_dir=cdir) as f:
        got = list(f.fetch(range(len(ds))))
        st = f.stats
    assert _right(ds, truth, got) == [] and st["cache_hits"] == 4 and crcs == []
    for u, e in entries.items():   # the data files' times are the stamp's: left alone
        now = os.stat(e.path)
        assert (now.st_mtime_ns, now.st_ctime_ns) == (before[u].st_mtime_ns, before[u].st_ctime_ns)
    time.sleep(0.02)   # past the filesystem's timestamp granularity
    _flip(entries[urls[1]].path)
    cache_mod._VERIFIED.clear()
    with RecordFetcher(ds, cache="shards", cache_dir=cdir) as f:
        got = list(f.fetch(range(len(ds))))
        st = f.stats
    # only the written one is read again; its new download is checksummed from the bytes
    # as they streamed in, so publishing it reads no file
    assert crcs == [entries[urls[1]].path]
    assert _right(ds, truth, got) == [] and (st["cache_corrupt"], st["cache_downloads"]) == (1, 1)
    fresh = {e.url: e for e in ShardCache(cdir).entries()}[urls[1]]
    with open(fresh.path, "rb") as fh:   # the streamed CRC is the file's
        assert json.load(open(fresh.path[:-len(".data")] + ".json"))["crc32"] == zlib.crc32(fh.read())


def test_cache_verify_command_finds_and_drops_damage(dataset, tmp_path, capsys):
    from cloudrec.cli import main
    urls, truth, so = dataset
    cdir = str(tmp_path / "cache")
    _fill_in_other_process(urls[:2], so, cdir)
    assert main(["cache", "verify", "--dir", cdir]) == 0
    assert "2 shard(s) intact, 0 damaged" in capsys.readouterr().out
    bad = [e for e in ShardCache(cdir).entries() if e.url == urls[1]][0]
    _flip(bad.path, at=10, n=1)
    assert main(["cache", "verify", "--dir", cdir]) == 1
    out = capsys.readouterr().out
    assert "damaged: " + urls[1] in out and "CRC32 mismatch" in out and "1 shard(s) intact, 1 damaged" in out
    assert [e.url for e in ShardCache(cdir).entries()] == [urls[0]]
    assert main(["cache", "verify", "--dir", cdir]) == 0


def _disk_bytes(cache_dir):
    """Bytes the cache folder's data occupies for real: files present plus files deleted but
    still open in this process (their space is not released)."""
    present = sum(os.path.getsize(os.path.join(cache_dir, n)) for n in os.listdir(cache_dir)
                  if n.endswith(".data") or ".tmp." in n)
    ghosts = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(cache_dir) and target.endswith(" (deleted)"):
            ghosts += os.fstat(int(fd)).st_size
    return present + ghosts, ghosts


def test_cap_holds_while_readers_hold_entries(dataset, tmp_path):
    urls, truth, so = dataset
    ds = open_dataset(urls, storage_options=so)
    sizes = [s.size for s in ds.shards]
    cap = sizes[0] + sizes[1] + sizes[2] // 2  # room for two shards and a half
    cdir = str(tmp_path / "cache")
    order = np.random.default_rng(2).permutation(len(ds))
    readers = [RecordFetcher(ds, cache="shards", cache_dir=cdir, cache_max_bytes=cap)
               for _ in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):
            for f in readers:  # two readers of one node, epochs interleaved
                got = list(f.fetch(order))
                assert [r for r, _ in got] == order.tolist() and _right(ds, truth, got) == []
                used, ghosts = _disk_bytes(cdir)
                assert used <= cap and ghosts == 0, (used, ghosts, cap)
    assert sum("reading such shards directly" in str(w.message) for w in caught) == 1
    st = [f.stats for f in readers]
    assert st[0]["cache_downloads"] + st[1]["cache_downloads"] == 2, st
    assert st[0]["cache_bypassed"] == 2 and st[1]["cache_bypassed"] == 2, st
    for f in readers:
        f.close()
    # once the readers are gone their entries can be evicted again: a new one caches a
    # shard they had to read directly
    cached = {e.url for e in ShardCache(cdir).entries()}
    missing = [i for i, s in enumerate(ds.shards) if s.rec_url not in cached][0]
    with RecordFetcher(ds, cache="shards", cache_dir=cdir, cache_max_bytes=cap) as g:
        sel = np.flatnonzero(ds.table.shard == missing)
        got = list(g.fetch(sel))
        assert _right(ds, truth, got) == [] and g.stats["cache_downloads"] == 1
        assert _disk_bytes(cdir)[0] <= cap


def test_clear_removes_only_the_cache_files(tmp_path):
    c = ShardCache(str(tmp_path), max_bytes=1 << 20)
    c.get("s3://b/a.rec", 10, "v", lambda tmp: open(tmp, "wb").write(b"0123456789"))
    foreign = ["notes.json", "model.data", "x.tmp.1.2", "weights.lock", ".hidden.json",
               "0123456789abcdef0123-0123456789ab.data.bak"]
    for n in foreign:
        (tmp_path / n).write_bytes(b"keep me")
    assert c.clear() == 1
    assert sorted(os.listdir(tmp_path)) == sorted(foreign + [".evict.lock"])


# ---- real full and read-only filesystems: a small tmpfs in a private mount namespace ----
_CHILD = textwrap.dedent("""
    import hashlib, json, os, sys, warnings
    from cloudrec.dataset import open_dataset
    from cloudrec.reader.fetch import RecordFetcher
    args = json.loads(os.environ["CLOUDREC_TEST_ARGS"])
    ds = open_dataset(args["urls"], storage_options=args["so"])
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with RecordFetcher(ds, cache="shards", cache_dir=args["dir"]) as f:
                out["sha"] = {str(r): hashlib.sha256(p).hexdigest() for r, p in f.fetch(range(len(ds)))}
                out["stats"] = f.stats
        except Exception as exc:
            out["error"] = [type(exc).__name__, str(exc)]
    out["warnings"] = [str(w.message) for w in caught]
    out["files"] = sorted(os.listdir(args["dir"]))
    print("RESULT " + json.dumps(out))
""")


def _in_tmpfs(size, phases, tmp_path):
    """Run ``phases`` (lists of ('py', args) or ('ro', None)) in a private mount namespace
    on a fresh tmpfs of ``size``; returns the RESULT of each python phase."""
    if not shutil.which("unshare"):
        pytest.fail("util-linux unshare is needed for the tmpfs tests")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = [f"mount -t tmpfs -o size={size} tmpfs {mnt}"]
    env = dict(os.environ)
    for i, (kind, args) in enumerate(phases):
        if kind == "ro":
            script.append(f"mount -o remount,ro {mnt}")
        else:
            (tmp_path / f"args{i}.json").write_text(json.dumps({**args, "dir": str(mnt / "cache")}))
            script.append(f"CLOUDREC_TEST_ARGS=\"$(cat {tmp_path}/args{i}.json)\" "
                          f"{sys.executable} -c \"$CHILD\"")
    env["CHILD"] = _CHILD
    cmd = ["unshare", "-rm"] if os.geteuid() != 0 else ["unshare", "-m"]
    proc = subprocess.run(cmd + ["sh", "-ec", " && ".join(script)], env=env, capture_output=True,
                          text=True, timeout=240)
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == sum(1 for k, _ in phases if k == "py"), proc.stderr[-3000:]
    return results


def test_full_disk_is_reported_as_such(dataset, tmp_path):
    urls, _, so = dataset
    # a 64 KB disk for shards of ~400 KB
    [res] = _in_tmpfs("64k", [("py", {"urls": urls[:1], "so": so})], tmp_path)
    kind, msg = res["error"]
    assert kind == "CacheDiskFullError", res
    assert "is full" in msg and str(tmp_path / "mnt" / "cache") in msg and urls[0] in msg
    assert not [n for n in res["files"] if n.endswith(".data") or ".tmp." in n], res["files"]


def test_read_only_prefilled_cache_serves_hits_and_reads_misses(dataset, tmp_path):
    urls, truth, so = dataset
    fill, read = _in_tmpfs("16m", [("py", {"urls": urls[:2], "so": so}), ("ro", None),
                                   ("py", {"urls": urls, "so": so})], tmp_path)
    assert fill["stats"]["cache_downloads"] == 2 and "error" not in fill
    assert "error" not in read, read
    st = read["stats"]
    assert (st["cache_hits"], st["cache_downloads"], st["cache_bypassed"]) == (2, 0, 2), st
    assert len(read["warnings"]) == 1 and "read-only" in read["warnings"][0], read["warnings"]
    ds = open_dataset(urls, storage_options=so)
    for r in range(len(ds)):
        want = truth[(int(ds.table.shard[r]), int(ds.table.key[r]))]
        assert read["sha"][str(r)] == hashlib.sha256(want).hexdigest(), r
    assert read["files"] == fill["files"]


def test_downloads_skip_fsync_and_another_boot_checks_every_entry_again(
        dataset, tmp_path, monkeypatch):
    """No fsync on the download path: a stamp names the boot, so after a crash that may
    have lost unsynced pages (a new boot) each entry's first use checks its CRC32 again."""
    import cloudrec.storage.cache as cache_mod
    import cloudrec.storage.cache_files as cache_files
    assert cache_files.BOOT_ID is not None   # Linux: /proc/sys/kernel/random/boot_id
    urls, truth, so = dataset
    cdir = str(tmp_path / "cache")
    syncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    ds = open_dataset(urls, storage_options=so)
    with RecordFetcher(ds, cache="shards", cache_dir=cdir) as f:
        got = list(f.fetch(range(len(ds))))
        assert f.stats["cache_downloads"] == 4
    assert _right(ds, truth, got) == [] and syncs == []
    crcs = []
    real = cache_mod.crc32_file
    monkeypatch.setattr(cache_mod, "crc32_file", lambda p: crcs.append(p) or real(p))

    def epoch():
        cache_mod._VERIFIED.clear()   # a process that never opened the entries
        with RecordFetcher(ds, cache="shards", cache_dir=cdir) as f:
            out = list(f.fetch(range(len(ds))))
            assert f.stats["cache_hits"] == 4 and f.stats["cache_downloads"] == 0
        assert _right(ds, truth, out) == []

    epoch()
    assert crcs == []                              # same boot: the stamps are trusted
    monkeypatch.setattr(cache_files, "BOOT_ID", cache_files.BOOT_ID ^ 1)   # after a reboot
    epoch()
    paths = sorted(e.path for e in ShardCache(cdir).entries())
    assert sorted(crcs) == paths                   # every entry checked once again
    crcs.clear()
    epoch()
    assert crcs == []                              # and stamped for this boot
