"""The simulator against the real thing (issue #18.4): small jobs run for real on the
loopback S3 server behind the counting proxy; GETs and bytes must match the
simulation exactly (the epoch-time comparison is bench/sim_validate.py's)."""
from __future__ import annotations

import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.sim import JobSpec, StorageModel, from_dataset, simulate
from cloudrec.sim.validate import run_real

pytest.importorskip("torch")
pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def shards(s3_server):
    bucket = s3_server.new_bucket()
    urls, _ = write_synthetic(bucket, 4, 120, min_size=3000, max_size=40000, seed=7,
                              magic_every=0, storage_options=s3_server.storage_options)
    return urls


CASES = [
    ("block", 2, 2, {}),
    ("global", 1, 2, {}),
    ("block", 2, 1, {"max_gap": 0, "window_bytes": 1 << 20}),
    ("shard", 1, 2, {"cache": "shards"}),
    ("global", 2, 2, {"cache": "auto"}),
]


@pytest.mark.parametrize("mode,world,workers,fetch", CASES)
def test_gets_and_bytes_match_the_simulation(shards, fault_proxy, tmp_path, mode, world, workers,
                                             fetch):
    so = fault_proxy.storage_options
    job = JobSpec(world_size=world, num_workers=workers, batch_size=32, mode=mode, seed=3,
                  ranks_per_node=world, fetch=fetch)
    sim = simulate(from_dataset(open_dataset(shards, storage_options=so)), job, StorageModel())
    fault_proxy.configure()            # zero the counts: only the job's own traffic below
    real = run_real(shards, job, so, cache_dir=str(tmp_path / "cache"))
    traffic = fault_proxy.traffic()
    ids = [i for r in real["ranks"] for i in r["ids"]]
    assert sorted(set(ids)) == list(range(sim["dataset"]["records"]))   # the whole epoch was read
    assert traffic["GET .rec"]["requests"] == sim["gets"]
    assert traffic["GET .rec"]["bytes"] == sim["bytes"]
    assert traffic["GET .idx"]["requests"] == world * len(shards) == world * sim["open"]["GET .idx per rank"]
    assert traffic["HEAD .rec"]["requests"] == world * sim["open"]["HEAD per rank"]
    assert traffic["HEAD .idx"]["requests"] == world * sim["open"]["HEAD .idx per rank"]


def test_cache_downloads_of_shards_larger_than_a_chunk(s3_server, fault_proxy, tmp_path):
    """10 MB shards: the downloader's growing chunks (several GETs per shard), once per node."""
    bucket = s3_server.new_bucket()
    urls, _ = write_synthetic(bucket, 2, 100, min_size=90_000, max_size=110_000, seed=8,
                              magic_every=0, storage_options=s3_server.storage_options)
    so = fault_proxy.storage_options
    job = JobSpec(world_size=2, num_workers=2, batch_size=32, mode="block", seed=1,
                  ranks_per_node=2, fetch={"cache": "shards"})
    sim = simulate(from_dataset(open_dataset(urls, storage_options=so)), job, StorageModel())
    fault_proxy.configure()
    run_real(urls, job, so, cache_dir=str(tmp_path / "cache"))
    got = fault_proxy.traffic()["GET .rec"]
    assert sim["gets"] > 2                   # more than one GET per shard
    assert (got["requests"], got["bytes"]) == (sim["gets"], sim["bytes"])
