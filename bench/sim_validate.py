"""``cloudrec simulate`` against real epochs on loopback S3: requests, bytes and time (#18.4).

    python bench/sim_validate.py [--latency-ms 20] [--records 1600] [--shards 8] [--kb 60]

Writes a synthetic dataset to moto, puts the fault proxy (``--latency-ms`` per
request) in front, measures the storage model's bandwidths there (one
whole-object GET for a connection, 8 concurrent ones for the node), then for
each job below runs the simulator and the real thing (``cloudrec.sim.validate``:
every rank a RecordIterableDataset under a DataLoader, all ranks at once) and
prints GETs and bytes (which must match exactly; counted at the proxy) and
epoch seconds, simulated / real (the issue's target: within 25 %).  JSON:
bench/results/sim_validate.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)

JOBS = [("block", 1, 2, {}), ("block", 2, 2, {}), ("global", 1, 2, {}),
        ("global", 2, 1, {"max_gap": 0}), ("block", 2, 2, {"cache": "shards"})]


def calibrate(ds, latency_s: float) -> tuple:
    """(bytes/s of one connection, bytes/s of 8 at once) through the proxy, latency removed."""
    fs, path = ds.filesystem(0)
    size = ds.shards[0].size
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        fs.cat_file(path)
        best = min(best, time.perf_counter() - t0)
    stream = size / max(best - latency_s, 1e-3)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: ds.filesystem(s)[0].cat_file(ds.filesystem(s)[1]),
                      range(len(ds.shards))))
    node = ds.nbytes / max(time.perf_counter() - t0 - latency_s, 1e-3)
    return stream, node


def server_rate(ds, n: int = 256, threads: int = 64) -> float:
    """GET/s the loopback server answers for small ranged reads of these shards (moto and
    the proxy are single Python processes: their ceiling plays S3's per-prefix limit)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(ds), n)
    t = ds.table

    def one(rid: int) -> int:
        fs, path = ds.filesystem(int(t.shard[rid]))
        a = int(t.offset[rid])
        return len(fs.cat_file(path, start=a, end=a + 4096))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, picks.tolist()))
    return n / (time.perf_counter() - t0)


def worker_start(bucket: str, moto, so, storage, workers: int, batch: int) -> float:
    """A DataLoader epoch of one tiny shard, real minus simulated: the workers' start-up."""
    from cloudrec.dataset import open_dataset
    from cloudrec.dataset.synthetic import write_synthetic
    from cloudrec.sim import JobSpec, from_dataset, simulate
    from cloudrec.sim.validate import run_real
    urls, _ = write_synthetic(bucket + "/tiny", 1, batch, min_size=500, max_size=1500,
                              magic_every=0, storage_options=moto.storage_options)
    job = JobSpec(num_workers=workers, batch_size=batch, mode="block")
    sim = simulate(from_dataset(open_dataset(urls, storage_options=so)), job, storage)
    real = min(run_real(urls, job, so)["seconds"] for _ in range(2))
    return max(0.0, real - sim["epoch_s"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--records", type=int, default=1600)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--kb", type=float, default=60.0, help="mean record size")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    from cloudrec.dataset import open_dataset
    from cloudrec.dataset.synthetic import write_synthetic
    from cloudrec.sim import JobSpec, StorageModel, from_dataset, simulate
    from cloudrec.sim.validate import run_real
    from cloudrec.testing import FaultProxy, MotoServer
    rows = []
    rec = int(args.kb * 1000)
    with MotoServer() as moto, FaultProxy(moto.endpoint_url) as proxy:
        bucket = moto.new_bucket("simval")
        urls, _ = write_synthetic(bucket, args.shards, args.records // args.shards,
                                  min_size=rec // 2, max_size=rec * 3 // 2, magic_every=0,
                                  storage_options=moto.storage_options)
        proxy.configure(latency_ms=args.latency_ms)
        so = dict(proxy.storage_options)
        so.pop("config_kwargs", None)
        ds = open_dataset(urls, storage_options=so)
        stream_bw, node_bw = calibrate(ds, args.latency_ms / 1000)
        rate = server_rate(ds)
        storage = StorageModel(latency_s=args.latency_ms / 1000, stream_bw=stream_bw,
                               node_bw=node_bw, prefix_rate=rate)
        start = {k: worker_start(bucket, moto, so, storage, k, args.batch) for k in (1, 2)}
        print(f"{len(ds)} records, {ds.nbytes / 1e6:.1f} MB in {args.shards} shards; measured "
              f"{stream_bw / 1e6:.0f} MB/s per connection, {node_bw / 1e6:.0f} MB/s for 8, "
              f"{rate:.0f} GET/s from the server, worker start-up {start[1]:.2f} s (1 worker), "
              f"{start[2]:.2f} s (2)", flush=True)
        print(f"  {'job':<38} {'GETs sim/real':>14} {'MB sim/real':>16} {'epoch s sim/real':>18} ratio (latency+bw only)")
        for mode, world, workers, fetch in JOBS:
            job = JobSpec(world_size=world, num_workers=workers, batch_size=args.batch, mode=mode,
                          seed=1, ranks_per_node=world, fetch=fetch, worker_start_s=start[workers])
            sim = simulate(from_dataset(ds), job, storage)
            bare = simulate(from_dataset(ds), JobSpec(**{**job.as_dict(), "worker_start_s": 0.0}),
                            StorageModel(latency_s=storage.latency_s, stream_bw=stream_bw,
                                         node_bw=node_bw))
            with tempfile.TemporaryDirectory() as cache_dir:
                proxy.configure(latency_ms=args.latency_ms)
                real = run_real(urls, job, so, cache_dir=cache_dir)
            t = proxy.traffic().get("GET .rec", {"requests": 0, "bytes": 0})
            label = f"{mode} {world}x{workers} {fetch or ''}"
            row = {"job": label, "sim_gets": sim["gets"], "real_gets": t["requests"],
                   "sim_bytes": sim["bytes"], "real_bytes": t["bytes"],
                   "sim_epoch_s": sim["epoch_s"], "real_epoch_s": real["seconds"],
                   "sim_first_batch_s": sim["first_batch_s"],
                   "real_first_batch_s": real["first_batch_s"],
                   "ratio": sim["epoch_s"] / real["seconds"],
                   "ratio_uncalibrated": bare["epoch_s"] / real["seconds"]}
            rows.append(row)
            print(f"  {label:<38} {row['sim_gets']:>6.0f}/{row['real_gets']:<7} "
                  f"{row['sim_bytes'] / 1e6:>7.1f}/{row['real_bytes'] / 1e6:<8.1f} "
                  f"{row['sim_epoch_s']:>8.2f}/{row['real_epoch_s']:<9.2f} {row['ratio']:.2f} "
                  f"({row['ratio_uncalibrated']:.2f})",
                  flush=True)
    exact = all(r["sim_gets"] == r["real_gets"] and r["sim_bytes"] == r["real_bytes"] for r in rows)
    within = sum(0.75 <= r["ratio"] <= 1.25 for r in rows)
    print(f"counts exact: {exact}; epoch time within 25 %: {within} of {len(rows)}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import figure, write_result
    figs = [figure("GETs and bytes equal", float(exact), note="1 = every job exact"),
            figure("jobs with epoch time within 25 %", within, f"of {len(rows)}", target="all")]
    figs += [figure(r["job"], r["ratio"], "x", group="simulated / real epoch s") for r in rows]
    write_result("sim_validate", {**vars(args), "storage": dict(storage.__dict__),
                                  "worker_start_s": start},
                 {"rows": rows, "counts_exact": exact, "within_25pct": within}, figs,
                 title=f"cloudrec simulate vs real epochs, {len(ds)} records in {args.shards} "
                       f"shards, S3 (moto) +{args.latency_ms:g} ms/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
