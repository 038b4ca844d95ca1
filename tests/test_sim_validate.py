"""The simulator against the real thing (issue #18.4): small jobs run for real on the
loopback S3 server behind the counting proxy; GETs and bytes must match the
simulation exactly.  Each case also prints (and records as a junit property) the
simulated / real epoch time with the CPU costs calibrated on this machine; that is
a figure, never asserted (timings belong to bench/sim_validate.py)."""
from __future__ import annotations

import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.sim import JobSpec, StorageModel, from_dataset, simulate
from cloudrec.sim.calibrate import CpuMeter, client_setup, host_model, storage_costs
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
    ("global", 1, 2, {"spool": False}),   # no spool: gaps capped at 2% (the default)
]


def _server_pids(s3_server, proxy):
    """pids of moto and the proxy when this session started them (not an external server)."""
    out = {}
    for name, svc, label in (("moto", s3_server, "moto"), ("proxy", proxy, "faultproxy")):
        proc = getattr(svc, "procs", {}).get(label)
        if proc is None:
            return {}
        out[name] = proc.pid
    return out


def _timing_figure(ds, job, pids, real_s, cpu, record_property) -> None:
    """Print and record simulated / real epoch seconds, CPU costs measured just before."""
    costs = cpu["costs"]
    storage = StorageModel(latency_s=0.0, stream_bw=1e12,
                           server_cpu={k: costs[k] for k in pids})
    wk = {"worker_record_s": 0.0, "main_batch_s": 0.0, "start_s": 0.0}
    host = host_model(costs, wk, cpu["cores_free"], setup=cpu["setup"])
    sim_s = simulate(ds, job, storage, host)["epoch_s"]
    print(f"\n{job.mode} {job.world_size}x{job.num_workers} {job.fetch}: epoch simulated "
          f"{sim_s:.2f} s / real {real_s:.2f} s = {sim_s / real_s:.2f}x "
          f"({cpu['cores_free']:.2f} cores free)")
    record_property("epoch_sim_over_real", round(sim_s / real_s, 3))


@pytest.mark.parametrize("mode,world,workers,fetch", CASES)
def test_gets_and_bytes_match_the_simulation(shards, s3_server, fault_proxy, tmp_path, mode, world,
                                             workers, fetch, record_property):
    so = fault_proxy.storage_options
    job = JobSpec(world_size=world, num_workers=workers, batch_size=32, mode=mode, seed=3,
                  ranks_per_node=world, fetch=fetch)
    ds = from_dataset(open_dataset(shards, storage_options=so))
    sim = simulate(ds, job, StorageModel())
    pids = _server_pids(s3_server, fault_proxy)
    if pids:
        costs = storage_costs(open_dataset(shards, storage_options=so), pids, small=100, rounds=1)
        setup = client_setup(open_dataset(shards, storage_options=so), rounds=1)
    fault_proxy.configure()            # zero the counts: only the job's own traffic below
    meter = CpuMeter(pids).start()
    real = run_real(shards, job, so, cache_dir=str(tmp_path / "cache"))
    cpu = meter.stop()
    traffic = fault_proxy.traffic()
    ids = [i for r in real["ranks"] for i in r["ids"]]
    assert sorted(set(ids)) == list(range(sim["dataset"]["records"]))   # the whole epoch was read
    assert traffic["GET .rec"]["requests"] == sim["gets"]
    assert traffic["GET .rec"]["bytes"] == sim["bytes"]
    if "max_waste" in fetch:   # the gaps merged stay within budget of the records read
        read = int(ds.table.length[ids].sum())
        assert read <= traffic["GET .rec"]["bytes"] <= (1 + fetch["max_waste"]) * read
    assert traffic["GET .idx"]["requests"] == world * len(shards) == world * sim["open"]["GET .idx per rank"]
    # the shards' sizes: one listing of their folder per rank, no HEAD
    assert traffic.get("HEAD .rec", {"requests": 0})["requests"] == \
        world * sim["open"]["HEAD per rank"] == 0
    assert traffic["GET"]["requests"] == world * sim["open"]["LIST per rank"] == world
    # an .idx is one GET, no HEAD (s3fs's size probe is skipped)
    head_idx = traffic.get("HEAD .idx", {"requests": 0})["requests"]
    assert head_idx == world * sim["open"]["HEAD .idx per rank"] == 0
    if pids:   # a printed figure, not a check: timings vary with the machine's load
        _timing_figure(ds, job, pids, real["seconds"], {**cpu, "costs": costs, "setup": setup},
                       record_property)


def test_cache_downloads_of_shards_larger_than_a_chunk(s3_server, fault_proxy, tmp_path):
    """20 MB shards: more than one of the downloader's 16 MB chunks (several GETs per shard),
    once per node."""
    bucket = s3_server.new_bucket()
    urls, _ = write_synthetic(bucket, 2, 200, min_size=90_000, max_size=110_000, seed=8,
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
