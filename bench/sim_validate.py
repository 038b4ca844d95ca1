"""``cloudrec simulate`` against real epochs on loopback S3: requests, bytes and time (#18.4).

    python bench/sim_validate.py [--latency-ms 20] [--records 1600] [--shards 8] [--kb 60]

Writes a synthetic dataset to moto, puts the fault proxy (``--latency-ms`` per
request) in front and calibrates the models on this machine
(``cloudrec.sim.calibrate``): one connection's bandwidth; the CPU per GET and
per byte of moto, of the proxy and of the storage client (small GETs, then
whole shards); a forked worker's client set-up; open_dataset's CPU; a local
DataLoader epoch's CPU per record and batch and time to first batch; the
cache's write + CRC per byte.  Then, ``--rounds`` times, for each job below it
runs the real thing (``cloudrec.sim.validate``: every rank a
RecordIterableDataset under a DataLoader, all ranks at once), measuring the
cores the rest of the machine left free meanwhile (``/proc/stat`` minus our
processes: other sessions' tests share these 2 cores), and the simulator with
that many cores.  It prints GETs and bytes (which must match exactly; counted
at the proxy) and epoch seconds, simulated / real (target: within 25 %), also
with all cores assumed free and with latency + bandwidth alone.  JSON:
bench/results/sim_validate.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)

JOBS = [("block", 1, 2, {}), ("block", 2, 2, {}), ("global", 1, 2, {}),
        ("global", 2, 1, {"max_gap": 0}), ("block", 2, 2, {"cache": "shards"}),
        ("global", 1, 1, {"concurrency": 2})]    # latency-bound: few connections


def stream_bandwidth(ds, latency_s: float) -> float:
    """Bytes/s of one connection through the proxy (one whole-object GET, latency removed)."""
    fs, path = ds.filesystem(0)
    size = ds.shards[0].size
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        fs.cat_file(path)
        best = min(best, time.perf_counter() - t0)
    return size / max(best - latency_s, 1e-3)


def calibrate(ds, urls, local_urls, so, pids, latency_s: float, batch: int):
    """The storage and host models, measured here (see cloudrec.sim.calibrate)."""
    from cloudrec.sim import StorageModel
    from cloudrec.sim import calibrate as cal
    stream_bw = stream_bandwidth(ds, latency_s)
    costs = cal.storage_costs(ds, pids)
    setup = cal.client_setup(ds)
    open_c = cal.open_cpu(urls, so, costs["client"][0])
    workers = {k: cal.worker_costs(local_urls, batch, k) for k in (1, 2)}
    cache_b = cal.cache_cpu(ds, *costs["client"], workers[1]["worker_record_s"])
    follow = cal.follow_cpu(ds, setup[1])
    storage = StorageModel(latency_s=latency_s, stream_bw=stream_bw,
                           server_cpu={k: costs[k] for k in pids})
    measured = {"stream_bw": stream_bw, "cpu_per_request_and_byte": costs,
                "worker_client_setup_wall_cpu": setup, "open_cpu_s": open_c,
                "local_dataloader": workers, "cache_byte_cpu_s": cache_b,
                "cache_follow": follow}
    def models(k: int, cores: float, fresh: dict):
        """Storage and host models for a job of ``k`` workers per rank, with the CPU per
        request and byte measured just before it (``fresh``) and ``cores`` free."""
        st = StorageModel(latency_s=latency_s, stream_bw=stream_bw,
                          server_cpu={p: fresh[p] for p in pids})
        return st, cal.host_model(fresh, workers[k], cores, setup, open_c, cache_b,
                                  follow["follow_pair_cpu_s"])
    return storage, measured, models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--records", type=int, default=1600)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--kb", type=float, default=60.0, help="mean record size")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="runs of every job (alternated)")
    args = ap.parse_args(argv)
    from dataclasses import replace

    from cloudrec.dataset import open_dataset
    from cloudrec.dataset.synthetic import write_synthetic
    from cloudrec.sim import JobSpec, StorageModel, from_dataset, simulate
    from cloudrec.sim.calibrate import CpuMeter, storage_costs
    from cloudrec.sim.validate import run_real
    from cloudrec.testing import FaultProxy, MotoServer
    rows = []
    rec = int(args.kb * 1000)
    shape = dict(min_size=rec // 2, max_size=rec * 3 // 2, magic_every=0)
    ncpu = os.cpu_count() or 1
    with MotoServer() as moto, FaultProxy(moto.endpoint_url) as proxy, \
            tempfile.TemporaryDirectory() as local:
        bucket = moto.new_bucket("simval")
        urls, _ = write_synthetic(bucket, args.shards, args.records // args.shards,
                                  storage_options=moto.storage_options, **shape)
        local_urls, _ = write_synthetic(local, args.shards, args.records // args.shards, **shape)
        proxy.configure(latency_ms=args.latency_ms)
        so = dict(proxy.storage_options)
        so.pop("config_kwargs", None)
        ds = open_dataset(urls, storage_options=so)
        pids = {"moto": moto.procs["moto"].pid, "proxy": proxy.procs["faultproxy"].pid}
        storage, measured, host_for = calibrate(ds, urls, local_urls, so, pids,
                                                args.latency_ms / 1000, args.batch)
        c = measured["cpu_per_request_and_byte"]
        print(f"{len(ds)} records, {ds.nbytes / 1e6:.1f} MB in {args.shards} shards; measured: "
              f"{measured['stream_bw'] / 1e6:.0f} MB/s per connection; CPU per GET / per MB: "
              + ", ".join(f"{k} {v[0] * 1e3:.2f} ms / {v[1] * 1e9:.1f} ms" for k, v in c.items())
              + f"; worker client set-up {measured['worker_client_setup_wall_cpu'][0]:.3f} s; "
              f"open_dataset CPU {measured['open_cpu_s']:.3f} s; per record (local, 1 worker) "
              f"{measured['local_dataloader'][1]['worker_record_s'] * 1e6:.0f} us", flush=True)
        print(f"  {'job':<32} {'GETs sim/real':>14} {'MB sim/real':>16} {'epoch s sim/real':>17} "
              f"{'first s sim/real':>17} ratio (cores {ncpu}; latency+bw only)  cores free")
        for rnd in range(args.rounds):
            for mode, world, workers, fetch in JOBS:
                job = JobSpec(world_size=world, num_workers=workers, batch_size=args.batch,
                              mode=mode, seed=1, ranks_per_node=world, fetch=fetch)
                # the CPU costs per request and byte move with the machine's state (other
                # sessions share its cores and caches): measured again next to each job
                fresh = storage_costs(ds, pids, small=200, rounds=1)
                with tempfile.TemporaryDirectory() as cache_dir:
                    proxy.configure(latency_ms=args.latency_ms)
                    meter = CpuMeter(pids).start()
                    real = run_real(urls, job, so, cache_dir=cache_dir)
                    cpu = meter.stop()
                t = proxy.traffic().get("GET .rec", {"requests": 0, "bytes": 0})
                storage, host = host_for(workers, cpu["cores_free"], fresh)
                sim = simulate(from_dataset(ds), job, storage, host)
                nominal = simulate(from_dataset(ds), job, storage, replace(host, cores=ncpu))
                bare = simulate(from_dataset(ds), job,
                                StorageModel(latency_s=storage.latency_s, stream_bw=storage.stream_bw))
                label = f"{mode} {world}x{workers} {fetch or ''}".strip()
                row = {"job": label, "round": rnd, "sim_gets": sim["gets"], "real_gets": t["requests"],
                       "sim_bytes": sim["bytes"], "real_bytes": t["bytes"],
                       "sim_epoch_s": sim["epoch_s"], "real_epoch_s": real["seconds"],
                       "sim_first_batch_s": sim["first_batch_s"],
                       "real_first_batch_s": real["first_batch_s"], "bound": sim["bound"],
                       "sim_open_s": sim["open"]["seconds"], "real_open_s": real["open_s"],
                       "ratio": sim["epoch_s"] / real["seconds"],
                       "ratio_all_cores": nominal["epoch_s"] / real["seconds"],
                       "ratio_uncalibrated": bare["epoch_s"] / real["seconds"],
                       "cores_free": cpu["cores_free"],
                       "cpu_real_s": {k: cpu[k] for k in (*pids, "main", "children", "others")},
                       "cpu_per_request_and_byte": fresh,
                       "cpu_sim_s": sim["cpu_s"]}
                rows.append(row)
                print(f"  {label:<32} {row['sim_gets']:>6.0f}/{row['real_gets']:<7} "
                      f"{row['sim_bytes'] / 1e6:>7.1f}/{row['real_bytes'] / 1e6:<8.1f} "
                      f"{row['sim_epoch_s']:>7.2f}/{row['real_epoch_s']:<9.2f} "
                      f"{row['sim_first_batch_s']:>7.2f}/{row['real_first_batch_s']:<9.2f} "
                      f"{row['ratio']:.2f} ({row['ratio_all_cores']:.2f}; "
                      f"{row['ratio_uncalibrated']:.2f})  {row['cores_free']:.2f}  {sim['bound']}; "
                      f"open {row['sim_open_s']:.2f}/{row['real_open_s']:.2f}",
                      flush=True)
    exact = all(r["sim_gets"] == r["real_gets"] and r["sim_bytes"] == r["real_bytes"] for r in rows)
    within = sum(0.75 <= r["ratio"] <= 1.25 for r in rows)
    print(f"counts exact: {exact}; epoch time within 25 %: {within} of {len(rows)} runs")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import figure, write_result
    figs = [figure("GETs and bytes equal", float(exact), note="1 = every run exact"),
            figure("runs with epoch time within 25 %", within, f"of {len(rows)}", target="all")]
    for label in dict.fromkeys(r["job"] for r in rows):
        ratios = [r["ratio"] for r in rows if r["job"] == label]
        figs.append(figure(label, float(np.median(ratios)), "x", group="simulated / real epoch s",
                           note="runs: " + ", ".join(f"{x:.2f}" for x in ratios)))
    free = [r["cores_free"] for r in rows]
    write_result("sim_validate", {**vars(args), "cpu_costs": "measured next to each job",
                                  "cores_free": f"{min(free):.2f}-{max(free):.2f} of {ncpu}"},
                 {"rows": rows, "counts_exact": exact, "within_25pct": within,
                  "measured": measured, "storage": dict(storage.__dict__)}, figs,
                 title=f"cloudrec simulate vs real epochs, {len(ds)} records in {args.shards} "
                       f"shards, S3 (moto) +{args.latency_ms:g} ms/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
