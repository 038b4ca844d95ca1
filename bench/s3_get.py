"""Client CPU per ranged S3 GET: cloudrec's presigned direct GETs against botocore's path.

    python bench/s3_get.py [--records 1000] [--record-kb 60] [--latency-ms 20]
                           [--concurrency 16] [--rounds 3]

One GET per record: a RecordFetcher reads every record of a dataset on S3 (moto
on 127.0.0.1 behind the fault proxy adding ``--latency-ms`` per request) in
``global`` order with ``max_gap=0, max_request=1`` (no merging), as a map-style dataset or an uncached
``global`` epoch of large records does.  Systems, alternated each round:

* cloudrec, direct: each GET presigned by the s3fs client and sent on its own
  aiohttp session (:mod:`cloudrec.storage.s3_direct`, the default);
* cloudrec through s3fs (``CLOUDREC_S3_DIRECT=0``): each GET an aiobotocore
  ``GetObject``, as before;
* s3fs alone: ``fs.cat_ranges`` of the same ranges in one call (what a user
  would write), concurrency ``--concurrency``.

Printed per system: wall seconds, CPU seconds of this process (the client),
of moto and of the proxy, per GET; every system must return the same bytes.
The figures are ratios from the same round (best round each).  JSON:
bench/results/s3_get.json.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from typing import Any, Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import figure, write_result  # noqa: E402

for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fetch_all(ds: Any, order: List[int], concurrency: int) -> str:
    from cloudrec.reader.fetch import RecordFetcher
    digest = hashlib.sha1()
    with RecordFetcher(ds, concurrency=concurrency, max_gap=0, max_request=1) as f:
        for rid, payload in f.fetch(order):
            digest.update(rid.to_bytes(8, "little"))
            digest.update(payload)
    return digest.hexdigest()


def _cat_ranges(ds: Any, order: List[int], concurrency: int) -> str:
    from cloudrec.format.framing import read_record_at
    t = ds.table
    fs, _ = ds.filesystem(0)
    paths = [ds.filesystem(int(t.shard[r]))[1] for r in order]
    starts = [int(t.offset[r]) for r in order]
    ends = [int(t.offset[r] + t.length[r]) for r in order]
    datas = fs.cat_ranges(paths, starts, ends, batch_size=concurrency)
    digest = hashlib.sha1()
    for rid, data in zip(order, datas):
        digest.update(rid.to_bytes(8, "little"))
        digest.update(read_record_at(data, 0)[0])
    return digest.hexdigest()


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--record-kb", type=int, default=60)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    from cloudrec.dataset import open_dataset
    from cloudrec.dataset.synthetic import write_synthetic
    from cloudrec.reader.orders import epoch_order
    from cloudrec.testing import FaultProxy, MotoServer
    with MotoServer() as moto, FaultProxy(moto.endpoint_url) as proxy:
        bucket = moto.new_bucket("bench-get")
        per = -(-args.records // args.shards)
        size = args.record_kb * 1000
        write_synthetic(bucket + "/ds", args.shards, per, min_size=size, max_size=size, seed=0,
                        storage_options=moto.storage_options)
        proxy.configure(latency_ms=args.latency_ms)
        so = dict(proxy.storage_options)
        so.pop("config_kwargs", None)   # no injected faults: latency only
        ds = open_dataset(bucket + "/ds/train-{0000..%04d}.rec" % (args.shards - 1),
                          storage_options=so)
        order = epoch_order(ds, 0, 0, "global").tolist()
        mpid, ppid = moto.procs["moto"].pid, proxy.procs["faultproxy"].pid

        def with_direct(on: bool, fn: Callable[[], str]) -> Callable[[], str]:
            def run() -> str:
                old = os.environ.get("CLOUDREC_S3_DIRECT")
                os.environ["CLOUDREC_S3_DIRECT"] = "1" if on else "0"
                try:
                    return fn()
                finally:
                    if old is None:
                        os.environ.pop("CLOUDREC_S3_DIRECT", None)
                    else:
                        os.environ["CLOUDREC_S3_DIRECT"] = old
            return run
        systems = {
            "cloudrec direct": with_direct(True, lambda: _fetch_all(ds, order, args.concurrency)),
            "cloudrec via s3fs": with_direct(False, lambda: _fetch_all(ds, order, args.concurrency)),
            "s3fs cat_ranges": lambda: _cat_ranges(ds, order, args.concurrency),
        }
        rounds: Dict[str, List[Dict[str, float]]] = {k: [] for k in systems}
        digests = set()
        for r in range(args.rounds):
            names = list(systems) if r % 2 == 0 else list(reversed(systems))
            for name in names:
                proxy.configure(latency_ms=args.latency_ms, clear_stats=True)
                m0, p0, c0, t0 = _cpu_of(mpid), _cpu_of(ppid), time.process_time(), time.perf_counter()
                digests.add(systems[name]())
                wall = time.perf_counter() - t0
                res = {"seconds": wall, "client_cpu_s": time.process_time() - c0,
                       "moto_cpu_s": _cpu_of(mpid) - m0, "proxy_cpu_s": _cpu_of(ppid) - p0,
                       "gets": proxy.traffic().get("GET .rec", {}).get("requests", 0)}
                rounds[name].append(res)
                n = max(1, res["gets"])
                print(f"  {name:<18} {wall:6.2f} s  {res['gets']:5d} GETs  client "
                      f"{1000 * res['client_cpu_s'] / n:5.2f} ms/GET  moto "
                      f"{1000 * res['moto_cpu_s'] / n:5.2f}  proxy {1000 * res['proxy_cpu_s'] / n:5.2f}",
                      flush=True)
        if len(digests) != 1:
            raise SystemExit(f"the systems returned different bytes ({len(digests)} digests)")
    best = {k: min(v, key=lambda x: x["seconds"]) for k, v in rounds.items()}
    cpu = {k: min(x["client_cpu_s"] for x in v) for k, v in rounds.items()}
    d, s, c = "cloudrec direct", "cloudrec via s3fs", "s3fs cat_ranges"
    figs = [figure("client CPU per GET, direct vs through s3fs", round(cpu[s] / cpu[d], 2), "x",
                   group="less client CPU"),
            figure("direct vs s3fs cat_ranges", round(cpu[c] / cpu[d], 2), "x",
                   group="less client CPU"),
            figure("epoch, direct vs through s3fs", round(best[s]["seconds"] / best[d]["seconds"], 2),
                   "x", group="faster"),
            figure("direct vs s3fs cat_ranges", round(best[c]["seconds"] / best[d]["seconds"], 2),
                   "x", group="faster"),
            figure("client CPU per GET, direct", round(1000 * cpu[d] / best[d]["gets"], 2), "ms")]
    write_result("s3_get", settings=dict(vars(args), get_per_record=True, order="global",
                                         max_gap=0, max_request=1),
                 results={"rounds": rounds, "best": best}, figures=figs,
                 title=f"one GET per record from S3 (moto + {args.latency_ms:g} ms proxy), "
                       f"{args.records} records of {args.record_kb} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
