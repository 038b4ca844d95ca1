"""A global order without a cache reads every byte once (issue #13.1, ``global`` mode).

DataLoader workers of a ``global`` order share one download of each shard in a
spool folder while the dataset fits their read-ahead; otherwise (several ranks,
``spool=False``, a dataset too big) the merged gaps are capped at 2% of the
records' bytes.  Bytes are counted at the loopback S3 proxy.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import ConfigError
from cloudrec.options import FetchOptions
from cloudrec.reader.spool import Spool, folder_name, sweep

torch_data = pytest.importorskip("torch.utils.data")
from cloudrec.torch import RecordIterableDataset  # noqa: E402


@pytest.fixture()
def spool_root(tmp_path, monkeypatch):
    root = tmp_path / "spool"
    monkeypatch.setenv("CLOUDREC_SPOOL_ROOT", str(root))
    return root


@pytest.fixture(scope="module")
def s3_urls(s3_server):
    bucket = s3_server.new_bucket()
    urls, _ = write_synthetic(bucket, 4, 120, min_size=4000, max_size=30000, seed=7,
                              magic_every=0, storage_options=s3_server.storage_options)
    return urls


def _epoch(loader):
    ids = []
    for b in loader:
        ids += [i for i, p in zip(b["ids"].tolist(), b["is_pad"].tolist()) if not p]
    return ids


def _loader(ds, workers=2):
    return torch_data.DataLoader(ds, batch_size=None, num_workers=workers,
                                 multiprocessing_context="fork")


def test_global_workers_share_one_download_per_shard(s3_urls, fault_proxy, spool_root):
    ds = RecordIterableDataset(s3_urls, decode=bytes, collate=list,
                               storage_options=fault_proxy.storage_options, batch_size=16, seed=2,
                               mode="global")
    assert ds.spool.eligible, ds.spool.reason
    path = ds.spool.path
    shard_bytes = sum(s.size for s in ds.source.shards)
    fault_proxy.configure()
    ids = _epoch(_loader(ds))
    assert sorted(ids) == list(range(len(ds.source)))            # exactly once
    got = fault_proxy.traffic()["GET .rec"]
    assert got["bytes"] == shard_bytes, got                      # each shard once, whole
    assert got["bytes"] <= 1.02 * int(ds.source.table.length.sum())
    assert os.path.isdir(path) and str(spool_root) in path
    # the next epoch is read from the spool: no GET at all
    ds.end_epoch()
    fault_proxy.configure()
    assert sorted(_epoch(_loader(ds))) == list(range(len(ds.source)))
    assert fault_proxy.traffic().get("GET .rec", {"requests": 0})["requests"] == 0
    del ds
    gc.collect()
    assert not os.path.exists(path)                              # not a cache: gone with it


@pytest.mark.parametrize("case", ["spool-off", "two-ranks"])
def test_without_the_spool_gaps_are_capped(s3_urls, fault_proxy, spool_root, case):
    so = fault_proxy.storage_options
    world = 2 if case == "two-ranks" else 1
    fo = {"spool": False} if case == "spool-off" else {}
    fault_proxy.configure()
    ids, need = [], 0
    for rank in range(world):
        ds = RecordIterableDataset(s3_urls, decode=bytes, collate=list, storage_options=so,
                                   batch_size=16, seed=2, mode="global", rank=rank,
                                   world_size=world, fetch_options=fo)
        assert not ds.spool.eligible
        ids += _epoch(_loader(ds))
        need += int(ds.source.table.length.sum())
    need //= world
    assert sorted(ids) == list(range(len(ds.source)))
    got = fault_proxy.traffic()["GET .rec"]
    assert got["bytes"] <= 1.02 * need, (got, need)
    assert not spool_root.exists() or not os.listdir(spool_root)


def test_unbounded_waste_is_still_available(s3_urls, fault_proxy, spool_root):
    """``max_waste=inf`` is the old behaviour: merged gaps, more bytes, fewer GETs."""
    so = fault_proxy.storage_options
    counts = {}
    for name, fo in (("capped", {"spool": False}),
                     ("unbounded", {"spool": False, "max_waste": float("inf")})):
        ds = RecordIterableDataset(s3_urls, decode=bytes, collate=list, storage_options=so,
                                   batch_size=16, seed=2, mode="global", fetch_options=fo)
        fault_proxy.configure()
        assert sorted(_epoch(_loader(ds))) == list(range(len(ds.source)))
        counts[name] = fault_proxy.traffic()["GET .rec"]
    assert counts["unbounded"]["bytes"] > counts["capped"]["bytes"]
    assert counts["unbounded"]["requests"] < counts["capped"]["requests"]


def _spool(ds, tmp_path, **kw):
    kw.setdefault("mode", "global")
    kw.setdefault("world_size", 1)
    fetch = kw.pop("fetch", {})
    fo = FetchOptions.coerce(fetch)
    return Spool(object.__new__(Spool), ds, fetch_kw=fo.fetcher_kwargs(
        [s.rec_url for s in ds.shards]), root=str(tmp_path / "root"), enabled=fo.spool, **kw)


def test_when_a_spool_is_used(s3_urls, s3_server, tmp_path):
    ds = open_dataset(s3_urls, storage_options=s3_server.storage_options)
    sp = _spool(ds, tmp_path)
    assert sp.eligible and sp.folder(2) == sp.path and sp.folder(1) is None
    assert sp.fetch_kw(3)["cache"] == "shards" and sp.fetch_kw(3)["cache_dir"] == sp.path
    assert sp.fetch_kw(3)["cache_max_bytes"] > sp.total == sum(s.size for s in ds.shards)
    # the dataset must fit the workers' read-ahead
    small = _spool(ds, tmp_path, fetch={"readahead_bytes": -(-sp.total // 3)})
    assert small.eligible and small.folder(2) is None and small.folder(3) == small.path
    for kw, why in (({"mode": "block"}, "runs of its own"), ({"world_size": 2}, "several ranks"),
                    ({"fetch": {"cache": "auto"}}, "cache"),
                    ({"fetch": {"spool": False}}, "turned off")):
        other = _spool(ds, tmp_path, **kw)
        assert not other.eligible and why in other.reason and other.fetch_kw(4) == {}


def test_local_shards_get_no_spool(tmp_path):
    urls, _ = write_synthetic(str(tmp_path), 2, 20, seed=1, magic_every=0)
    sp = _spool(open_dataset(urls), tmp_path)
    assert not sp.eligible and "local" in sp.reason


def test_sweep_removes_only_folders_of_dead_processes(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / folder_name(int(done.stdout), "abc")
    live = tmp_path / folder_name(os.getppid(), "def")
    mine = tmp_path / folder_name(os.getpid(), "0a")
    elsewhere = tmp_path / f"{int(done.stdout)}-1-abc"   # another pid namespace's: unknown
    other = tmp_path / "not-a-spool"
    for d in (dead, live, mine, elsewhere, other):
        (d / "x").mkdir(parents=True)
    assert sweep(str(tmp_path)) == 1
    assert not dead.exists()
    assert live.exists() and mine.exists() and elsewhere.exists() and other.exists()
    assert sweep(str(tmp_path / "missing")) == 0


def test_spool_option_is_checked():
    with pytest.raises(ConfigError, match="spool"):
        FetchOptions(spool="yes")


def test_an_unusable_spool_root_means_ranged_reads(s3_urls, s3_server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ds = open_dataset(s3_urls, storage_options=s3_server.storage_options)
    sp = Spool(object.__new__(Spool), ds, mode="global", world_size=1,
               fetch_kw=FetchOptions().fetcher_kwargs([s.rec_url for s in ds.shards]),
               root=str(blocker / "spool"))
    assert not sp.eligible and "cannot use" in sp.reason and sp.fetch_kw(2) == {}
