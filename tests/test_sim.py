"""cloudrec.sim: its request counts are the readers' own (planner, fetcher windows,
partition), checked against per-window plan_ranges and against a real RecordFetcher
on local shards; the report's fields and the CLI."""
from __future__ import annotations

import json

import pytest

from cloudrec.dataset import open_dataset
from cloudrec.dataset.synthetic import write_synthetic
from cloudrec.errors import ConfigError
from cloudrec.options import FETCH_DEFAULTS
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.reader.sampler import EpochSampler
from cloudrec.sim import (HostModel, JobSpec, StorageModel, format_report, from_dataset, simulate,
                          synthetic)
from cloudrec.sim.trace import plan_streams, plan_streams_reference, streams


def _streams(ds, f, mode, world, workers, batch, seed=5, epoch=1, **order_options):
    def sampler_for(rank):
        return EpochSampler(ds.table, seed=seed, mode=mode, rank=rank, world_size=world,
                            batch_size=batch, epoch=epoch, order_options=order_options)
    return list(streams(sampler_for, f, num_workers=workers, ranks=list(range(world))))


@pytest.mark.parametrize("mode", ["global", "block", "shard", "none"])
@pytest.mark.parametrize("workers,world,gap,maxreq,waste", [
    (1, 1, 256 << 10, 16 << 20, None), (2, 3, 0, 1 << 20, None), (3, 2, -1, 16 << 20, None),
    (2, 2, 64 << 10, 200_000, None), (2, 1, 256 << 10, 16 << 20, 0.02),
    (1, 2, 1 << 20, 300_000, 0.3)])
def test_vectorised_plan_equals_per_window_plan_ranges(mode, workers, world, gap, maxreq, waste):
    ds = synthetic(3000, 7, mean_bytes=20_000, dist="lognormal", seed=3)
    f = RecordFetcher(ds, window_bytes=1 << 20, max_gap=gap, max_request=maxreq, max_waste=waste)
    sts = _streams(ds, f, mode, world, workers, 64)
    got = plan_streams(ds.table, sts, f.max_gap, f.max_request, f.max_waste)
    want = plan_streams_reference(ds.table, sts, f.max_gap, f.max_request, f.max_waste)
    assert len(got) == len(want) > 0
    assert list(zip(got.stream.tolist(), got.window.tolist(), got.shard.tolist(),
                    got.start.tolist(), got.end.tolist())) == want


def test_pad_repeats_share_a_request():
    # 100 records, 3 ranks x batch 16: the last step pads with repeats of the first records
    ds = synthetic(100, 2, mean_bytes=1000, dist="fixed")
    f = RecordFetcher(ds)
    sts = _streams(ds, f, "none", 3, 1, 16)
    got = plan_streams(ds.table, sts, f.max_gap, f.max_request)
    want = plan_streams_reference(ds.table, sts, f.max_gap, f.max_request)
    assert sum(len(s.ids) for s in sts) == 3 * 16 * 3
    assert list(zip(got.stream.tolist(), got.window.tolist(), got.shard.tolist(),
                    got.start.tolist(), got.end.tolist())) == want


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory):
    base = tmp_path_factory.mktemp("simds")
    urls, _ = write_synthetic(str(base), 4, 150, min_size=2000, max_size=30000, seed=1, magic_every=0)
    return open_dataset(urls)


@pytest.mark.parametrize("mode,world,workers,fetch", [
    ("block", 1, 2, {}), ("global", 2, 2, {}), ("shard", 3, 1, {"max_gap": 0}),
    ("block", 2, 3, {"window_bytes": 200_000, "max_request": 100_000})])
def test_counts_equal_a_real_fetcher_on_local_shards(local_ds, mode, world, workers, fetch):
    """Every worker's ids fetched for real: the fetcher's own request/byte counters agree."""
    job = JobSpec(world_size=world, num_workers=workers, batch_size=32, mode=mode, seed=4,
                  ranks_per_node=1, fetch=fetch)
    rep = simulate(from_dataset(local_ds), job, StorageModel())
    gets = nbytes = 0
    per_rank = []
    for r in range(world):
        rg = 0
        for k in range(workers):   # what RecordIterableDataset's worker k of rank r reads
            sl = EpochSampler(local_ds.table, seed=4, mode=mode, rank=r, world_size=world,
                              batch_size=32).epoch_slice(k, workers)
            ids = sl.ids
            # the object-store defaults the simulator models, with the slice's hint
            with RecordFetcher(local_ds, **{**FETCH_DEFAULTS["object"], **fetch}) as f:
                got = f.fetch(ids, chunk_starts=sl.chunk_starts,
                              touching_only=sl.exclusive is not None)
                assert [rid for rid, _ in got] == ids.tolist()
                gets += f.requests
                nbytes += f.bytes_requested
                rg += f.requests
        per_rank.append(rg)
    assert rep["exact"] and rep["gets"] == gets and rep["bytes"] == nbytes
    assert rep["per_rank"]["gets"]["max"] == max(per_rank)
    assert rep["per_rank"]["gets"]["min"] == min(per_rank)


def test_report_fields_and_quality():
    ds = synthetic(20_000, 16, mean_bytes=50_000, seed=0)
    g = simulate(ds, JobSpec(world_size=4, num_workers=2, batch_size=64, mode="global",
                             ranks_per_node=2), StorageModel())
    n = simulate(ds, JobSpec(world_size=4, num_workers=2, batch_size=64, mode="none",
                             ranks_per_node=2), StorageModel())
    assert g["quality"]["distinct_fractions"] > 7.9 and n["quality"]["distinct_fractions"] < 1.5
    assert abs(g["quality"]["displacement"] - 1 / 3) < 0.01 and n["quality"]["displacement"] == 0
    assert g["gets"] > 10 * n["gets"]                      # per-record GETs vs merged reads
    assert g["per_node"]["gets"]["mean"] == pytest.approx(g["gets"] / 2)
    assert 0 < g["first_batch_s"] < g["epoch_s"]
    text = format_report(g)
    assert "GETs per rank" in text and "peak GET/s per prefix" in text
    json.dumps(g)  # serialisable as is


def test_cache_counts_one_download_per_shard_and_node():
    ds = synthetic(4000, 8, mean_bytes=20_000, dist="fixed")
    rep = simulate(ds, JobSpec(world_size=4, num_workers=2, batch_size=32, mode="global",
                               ranks_per_node=2, fetch={"cache": "shards"}), StorageModel())
    from cloudrec.storage.cache_download import chunk_bounds
    size = ds.shards[0].size
    per_shard = len(chunk_bounds(size))                     # the downloader's own chunking
    assert per_shard >= 1 and all(s.size == ds.shards[0].size for s in ds.shards)
    assert rep["gets"] == 2 * 8 * per_shard                 # 2 nodes x 8 shards, once each
    assert rep["bytes"] == 2 * ds.nbytes
    assert rep["per_node"]["cache_disk_bytes"]["max"] == ds.nbytes
    small = simulate(ds, JobSpec(world_size=4, num_workers=2, batch_size=32, mode="global",
                                 fetch={"cache": "auto", "cache_max_bytes": ds.nbytes - 1}),
                     StorageModel())
    assert small["settings"]["cache_used"] == "none"       # auto: does not fit, ranged reads


def test_prefix_rate_limit_bounds_the_epoch():
    ds = synthetic(50_000, 10, mean_bytes=10_000, dist="fixed")
    job = JobSpec(world_size=8, num_workers=4, batch_size=64, mode="global")
    free = simulate(ds, job, StorageModel(prefix_rate=1e9))
    tight = simulate(ds, job, StorageModel(prefix_rate=500))
    assert tight["bound"] == "prefix request rate"
    assert tight["epoch_s"] >= tight["gets"] / 500
    assert free["gets"] == tight["gets"] and free["epoch_s"] < tight["epoch_s"]


def test_sampled_ranks_scale_totals():
    ds = synthetic(40_000, 20, mean_bytes=30_000, seed=2)
    full = simulate(ds, JobSpec(world_size=16, num_workers=2, batch_size=64, ranks_per_node=2),
                    StorageModel())
    part = simulate(ds, JobSpec(world_size=16, num_workers=2, batch_size=64, ranks_per_node=2,
                                sample_ranks=4), StorageModel())
    assert full["exact"] and not part["exact"] and part["simulated_ranks"] == 4
    assert part["gets"] == pytest.approx(full["gets"], rel=0.1)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="shards"):
        synthetic(10, 20)
    with pytest.raises(ConfigError, match="order mode"):
        simulate(synthetic(100, 2), JobSpec(mode="random"), StorageModel())
    with pytest.raises(ConfigError, match="stream_bw"):
        simulate(synthetic(100, 2), JobSpec(), StorageModel(stream_bw=0))


def test_cli_json_and_table(tmp_path, capsys):
    from cloudrec.cli import main
    out = tmp_path / "r.json"
    assert main(["simulate", "--records", "5000", "--shards", "5", "--ranks", "2", "--workers", "2",
                 "--batch-size", "32", "--mode", "block", "--json", str(out),
                 "--order-option", "window_blocks=4"]) == 0
    text = capsys.readouterr().out
    assert "time to first batch" in text
    rep = json.loads(out.read_text())
    assert rep["settings"]["job"]["order_options"] == {"window_blocks": 4}
    assert rep["dataset"]["records"] == 5000
    assert main(["simulate", "--ranks", "2"]) == 2          # no dataset given
    assert "exactly one of" in capsys.readouterr().err


def test_overlapping_records_go_through_plan_ranges_itself():
    ds = synthetic(400, 2, mean_bytes=4000, dist="fixed")
    ds.table.length[::7] *= 3                    # malformed: spans overlap their neighbours
    f = RecordFetcher(ds, window_bytes=50_000, max_request=30_000)
    sts = _streams(ds, f, "block", 2, 2, 16, block_size=16)
    got = plan_streams(ds.table, sts, f.max_gap, f.max_request)
    want = plan_streams_reference(ds.table, sts, f.max_gap, f.max_request)
    assert list(zip(got.stream.tolist(), got.window.tolist(), got.shard.tolist(),
                    got.start.tolist(), got.end.tolist())) == want


def test_cli_on_a_real_dataset_and_on_its_table(local_ds, tmp_path, capsys):
    from cloudrec.cli import main
    from cloudrec.dataset.table_file import write_table
    urls = [s.rec_url for s in local_ds.shards]
    table = str(tmp_path / "t.crtable")
    write_table(urls, table)
    reports = []
    for args in (urls, ["--table", table]):
        out = tmp_path / "r.json"
        assert main(["simulate", *args, "--ranks", "2", "--workers", "2", "--batch-size", "32",
                     "--mode", "block", "--use-table", "--json", str(out)]) == 0
        reports.append(json.loads(out.read_text()))
    capsys.readouterr()
    a, b = reports
    assert a["dataset"] == b["dataset"] and a["dataset"]["records"] == len(local_ds)
    assert a["gets"] == b["gets"] and a["bytes"] == b["bytes"]
    assert b["open"]["GET table per node"] == 1 and b["open"]["LIST per rank"] == 1


def test_cpu_bounds_name_what_binds():
    """The node's cores, a single-threaded server process and one worker's core each bound
    the epoch when their CPU seconds exceed the storage's time (model arithmetic)."""
    ds = synthetic(20_000, 8, mean_bytes=20_000, dist="fixed")
    job = JobSpec(world_size=2, num_workers=2, batch_size=64, mode="global", ranks_per_node=2)
    free = simulate(ds, job, StorageModel())
    node = simulate(ds, job, StorageModel(), HostModel(cores=2, request_cpu_s=0.01))
    assert node["bound"] == "node CPU" and node["gets"] == free["gets"]
    assert node["epoch_s"] >= node["gets"] * 0.01 / 2 > free["epoch_s"]
    srv = simulate(ds, job, StorageModel(server_cpu={"srv": (0.02, 0.0)}))
    assert srv["bound"] == "server process srv (1 core)"
    assert srv["epoch_s"] >= srv["gets"] * 0.02
    one = simulate(ds, job, StorageModel(), HostModel(record_cpu_s=0.01))
    assert one["bound"] == "one worker's CPU (1 core)"
    assert one["epoch_s"] >= 20_000 / 4 * 0.01            # a worker's share of the records
    assert node["first_batch_s"] < node["epoch_s"] and node["cpu_s"]["node_max"] > 0
    with pytest.raises(ConfigError, match="record_cpu_s"):
        simulate(ds, job, StorageModel(), HostModel(record_cpu_s=-1))


def test_processor_sharing_first_wave_matches_brute_force():
    import numpy as np

    from cloudrec.sim.timing import _ps_finish, own_time
    rng = np.random.default_rng(1)
    u = rng.uniform(0.1, 2.0, 300)
    group = rng.integers(0, 3, 300)
    wave = rng.integers(0, 4, 300)
    q = rng.choice(300, 40, replace=False)
    got = _ps_finish(u, group, wave, q)
    want = [sum(min(u[j], u[i]) for j in range(300) if group[j] == group[i] and wave[j] <= wave[i])
            for i in q.tolist()]
    assert np.allclose(got, want)
    nb = np.array([0.0, 1e6])
    assert np.allclose(own_time(nb, StorageModel(latency_s=0.02, stream_bw=1e8), HostModel()),
                       [0.02, 0.03])


def test_cpu_meter_counts_our_cpu_and_the_cores_left():
    import os

    from cloudrec.sim.calibrate import CpuMeter
    m = CpuMeter({}).start()
    x = 0
    for i in range(300_000):
        x += i * i
    d = m.stop()
    assert d["main"] > 0 and d["wall"] > 0
    assert 0 < d["cores_free"] <= (os.cpu_count() or 1)


def test_planning_in_chunks_of_streams_equals_one_call():
    from cloudrec.sim.runner import _plan_in_chunks
    ds = synthetic(6000, 9, mean_bytes=15_000, seed=4)
    f = RecordFetcher(ds, window_bytes=1 << 20)
    sts = _streams(ds, f, "block", 3, 2, 32)
    one = plan_streams(ds.table, sts, f.max_gap, f.max_request)
    parts = _plan_in_chunks(ds.table, sts, f.max_gap, f.max_request, chunk_records=1500)
    for name in ("stream", "window", "shard", "start", "end", "need"):
        assert getattr(parts, name).tolist() == getattr(one, name).tolist()


def test_cli_host_cpu_options(tmp_path, capsys):
    from cloudrec.cli import main
    out = tmp_path / "r.json"
    assert main(["simulate", "--records", "4000", "--shards", "4", "--ranks", "2", "--workers", "2",
                 "--batch-size", "32", "--mode", "global", "--cores-per-node", "1",
                 "--request-cpu-ms", "10", "--json", str(out)]) == 0
    capsys.readouterr()
    rep = json.loads(out.read_text())
    assert rep["settings"]["host"]["cores"] == 1 and rep["settings"]["host"]["request_cpu_s"] == 0.01
    assert rep["bound"] == "node CPU" and rep["epoch_s"] >= rep["gets"] * 0.01
