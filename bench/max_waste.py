"""What ``max_waste`` costs and saves for a ``global`` order without a cache, simulated.

The loopback bench (``bench/peers.py``) runs the option against moto, whose ~5 ms of
CPU per GET shares the node's 2 cores, so extra GETs cost far more there than on S3.
This bench asks the simulator (:mod:`cloudrec.sim`, whose GET and byte counts the
test suite checks exactly against real epochs) for the same job on a store with S3's
first-byte latency and no server on the node: one epoch of 2 DataLoader workers,
batch 64, ~63 KB records, the unbounded planner (``max_waste=inf``) against budgets of
2% (the object-store default without a cache) and 10%, at 2,000 records (the peers
bench's size) and 100,000.  This is the path of a global order that does not use the
node's spool (several ranks, a dataset bigger than the workers' read-ahead,
``spool=False``); the simulator does not model the spool.  Ratios, never bare times: the
simulated epoch with the budget over the one without, and bytes over those of the records read (the last batch's padding included).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 100_000])
    ap.add_argument("--wastes", type=float, nargs="+", default=[0.02, 0.1])
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--request-cpu-ms", type=float, default=1.15,
                    help="client CPU per GET (bench/s3_get.py measures 1.15 ms for the direct path)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cores", type=float, default=2.0)
    args = ap.parse_args(argv)
    from _common import figure, write_result

    from cloudrec.sim import HostModel, JobSpec, StorageModel, simulate
    from cloudrec.sim.source import synthetic
    storage = StorageModel(latency_s=args.latency_ms / 1e3)
    host = HostModel(cores=args.cores, request_cpu_s=args.request_cpu_ms / 1e3,
                     byte_cpu_s=1e-9, record_cpu_s=20e-6)
    results: Dict[str, Any] = {}
    figs = []
    for n in args.sizes:
        ds = synthetic(n, max(8, n // 250), mean_bytes=62_700, dist="lognormal", seed=1)
        runs = {}
        for waste in [None] + list(args.wastes):
            job = JobSpec(world_size=1, num_workers=args.workers, batch_size=64, mode="global",
                          seed=0, fetch={"max_waste": float("inf") if waste is None else waste,
                                         "spool": False})
            r = simulate(ds, job, storage, host)
            runs[str(waste)] = {"epoch_s": r["epoch_s"], "gets": int(r["gets"]),
                                "bytes_x_records": r["bytes_over_records"]}
            label = "unbounded" if waste is None else f"max_waste={waste:g}"
            print(f"{n:>7} records, {label}: epoch {r['epoch_s']:.2f} s (simulated), "
                  f"{int(r['gets'])} GETs, bytes {r['bytes_over_records']:.3f}x the records read",
                  flush=True)
        results[str(n)] = runs
        base = runs["None"]
        figs.append(figure(f"{n:,} records, unbounded", base["bytes_x_records"], "x",
                           group="bytes moved / bytes of the records read (pads included)"))
        for waste in args.wastes:
            figs.append(figure(f"{n:,} records, `max_waste={waste:g}`",
                               runs[str(waste)]["bytes_x_records"], "x",
                               target="<= 1.02x" if waste <= 0.02 else None,
                               group="bytes moved / bytes of the records read (pads included)"))
        for waste in args.wastes:
            figs.append(figure(f"{n:,} records, `max_waste={waste:g}`",
                               runs[str(waste)]["epoch_s"] / base["epoch_s"], "x",
                               group="simulated epoch with the budget / without"))
    settings = {**vars(args), "mode": "global", "cache": "none", "spool": False, "batch": 64,
                "mean_record_kb": 62.7, "store": "simulated, no server CPU on the node"}
    write_result("max_waste", settings, results, figs,
                 title=f"max_waste on a global order without a cache, simulated S3 "
                       f"(+{args.latency_ms:g} ms/GET, {args.request_cpu_ms:g} ms client CPU/GET)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
