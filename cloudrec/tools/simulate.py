"""``cloudrec simulate``: one epoch of a distributed job, before paying for it.

GETs and bytes per rank and node, cache disk, peak request rate per prefix,
time to first batch, storage-bound epoch time and shuffle quality, for a
real dataset (its URL, or its compact table) or a synthetic one.  Counts come
from the readers' own order/partition/planner code; only times are modelled:
storage latency and bandwidth, GET/s per prefix, and (given the node's CPU
costs: --cores-per-node, --request-cpu-ms, ...) the node's cores.

    cloudrec simulate --records 14000000 --shards 1000 --record-kb 70 \\
        --ranks 64 --workers 8 --batch-size 256 --mode block --latency-ms 20
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from cloudrec.errors import CloudrecError, ConfigError


def _kv(text: str) -> tuple:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except ValueError:
        return k, v


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("dataset (a URL, a table file, or synthetic)")
    d.add_argument("dataset", nargs="*", help=".rec URL(s), glob or brace range (opened: .idx read)")
    d.add_argument("--table", default=None, help="a dataset table written by `cloudrec index --table`")
    d.add_argument("--records", type=int, default=None, help="synthetic: number of records")
    d.add_argument("--shards", type=int, default=None, help="synthetic: number of shards")
    d.add_argument("--record-kb", type=float, default=110.0, help="synthetic: mean record size, KB")
    d.add_argument("--size-dist", choices=("fixed", "uniform", "lognormal"), default="lognormal")
    d.add_argument("--sigma", type=float, default=0.5, help="lognormal log-sd of record sizes")
    d.add_argument("--storage-options", type=json.loads, default=None, help="JSON for fsspec")
    j = p.add_argument_group("job")
    j.add_argument("--ranks", type=int, default=1, help="world size")
    j.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    j.add_argument("--ranks-per-node", type=int, default=8)
    j.add_argument("--batch-size", type=int, default=256)
    j.add_argument("--mode", default="block", help="order mode: global, block, shard, none")
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--epoch", type=int, default=0)
    j.add_argument("--last", choices=("pad", "drop"), default="pad")
    j.add_argument("--order-option", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="epoch_order option, e.g. block_size=256, window_blocks=8 (repeatable)")
    j.add_argument("--cache", choices=("none", "shards", "auto"), default="none")
    j.add_argument("--cache-max-gb", type=float, default=None, help="shard cache cap per node")
    j.add_argument("--max-gap-kb", type=float, default=None)
    j.add_argument("--max-request-mb", type=float, default=None)
    j.add_argument("--concurrency", type=int, default=None, help="requests in flight per worker")
    j.add_argument("--readahead-mb", type=float, default=None)
    j.add_argument("--window-mb", type=float, default=None)
    j.add_argument("--use-table", action="store_true",
                   help="ranks open the dataset from its compact table, not every .idx")
    j.add_argument("--sample-ranks", type=int, default=0,
                   help="plan only about this many ranks (whole nodes) and scale totals; 0 = all")
    j.add_argument("--fractions", type=int, default=8, help="F for 'distinct 1/F per batch'")
    s = p.add_argument_group("storage model")
    s.add_argument("--latency-ms", type=float, default=20.0, help="time to first byte per GET")
    s.add_argument("--stream-mbps", type=float, default=90.0, help="MB/s of one connection")
    s.add_argument("--node-gbps", type=float, default=25.0, help="Gbit/s into one node")
    s.add_argument("--prefix-rate", type=float, default=5500.0, help="GET/s one prefix serves")
    s.add_argument("--prefixes", type=int, default=1)
    h = p.add_argument_group("node CPU (default: free; bench/sim_validate.py measures these here)")
    h.add_argument("--cores-per-node", type=float, default=0.0,
                   help="cores the node's processes share (0 = one per process)")
    h.add_argument("--request-cpu-ms", type=float, default=0.0,
                   help="storage client CPU per GET (botocore + aiohttp: ~2-3 ms)")
    h.add_argument("--mb-cpu-ms", type=float, default=0.0,
                   help="storage client CPU per MB received")
    h.add_argument("--record-cpu-ms", type=float, default=0.0,
                   help="a worker's CPU per record (decode, augment, collate)")
    h.add_argument("--worker-start-s", type=float, default=0.0,
                   help="DataLoader worker start-up before its first request")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON "
                   "('-' prints JSON instead of the table)")


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="predict one epoch's requests, bytes and time",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def _fetch_options(ns: argparse.Namespace) -> Dict[str, Any]:
    out: Dict[str, Any] = {"cache": ns.cache}
    for key, attr, scale in (("max_gap", "max_gap_kb", 1024), ("max_request", "max_request_mb", 1 << 20),
                             ("readahead_bytes", "readahead_mb", 1 << 20),
                             ("window_bytes", "window_mb", 1 << 20),
                             ("cache_max_bytes", "cache_max_gb", 1 << 30)):
        v = getattr(ns, attr)
        if v is not None:
            out[key] = int(v * scale)
    if ns.concurrency is not None:
        out["concurrency"] = ns.concurrency
    return out


def load_dataset(ns: argparse.Namespace):
    """The SimDataset the arguments name."""
    from cloudrec.sim.source import from_dataset, synthetic
    given = sum([bool(ns.dataset), ns.table is not None, ns.records is not None])
    if given != 1:
        raise ConfigError("give exactly one of: dataset URL(s), --table FILE, or --records N --shards S")
    if ns.records is not None:
        if ns.shards is None:
            raise ConfigError("--records needs --shards")
        return synthetic(ns.records, ns.shards, mean_bytes=ns.record_kb * 1000, dist=ns.size_dist,
                         sigma=ns.sigma, seed=ns.seed)
    if ns.table is not None:
        from cloudrec.dataset.table_file import read_table_file
        tf = read_table_file(ns.table, ns.storage_options)
        return from_dataset(tf, idx_sizes=tf.idx_sizes)
    from cloudrec.dataset import open_dataset
    return from_dataset(open_dataset(ns.dataset, storage_options=ns.storage_options))


def run(ns: argparse.Namespace) -> int:
    from cloudrec.sim import HostModel, JobSpec, StorageModel, format_report, simulate
    try:
        ds = load_dataset(ns)
        job = JobSpec(world_size=ns.ranks, num_workers=ns.workers, batch_size=ns.batch_size,
                      mode=ns.mode, seed=ns.seed, epoch=ns.epoch, last=ns.last,
                      ranks_per_node=ns.ranks_per_node, order_options=dict(ns.order_option),
                      fetch=_fetch_options(ns), table_file=ns.use_table,
                      sample_ranks=ns.sample_ranks, fractions=ns.fractions)
        storage = StorageModel(latency_s=ns.latency_ms / 1000, stream_bw=ns.stream_mbps * 1e6,
                               node_bw=ns.node_gbps * 1e9 / 8, prefix_rate=ns.prefix_rate,
                               prefixes=ns.prefixes)
        host = HostModel(cores=ns.cores_per_node, request_cpu_s=ns.request_cpu_ms / 1e3,
                         byte_cpu_s=ns.mb_cpu_ms / 1e9, record_cpu_s=ns.record_cpu_ms / 1e3,
                         worker_start_s=ns.worker_start_s)
        report = simulate(ds, job, storage, host)
    except (CloudrecError, TypeError) as exc:
        print(f"cloudrec simulate: {exc}", file=sys.stderr)
        return 2
    if ns.json == "-":
        print(json.dumps(report, indent=1))
        return 0
    print(format_report(report))
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="cloudrec simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
