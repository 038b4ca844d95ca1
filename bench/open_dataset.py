"""Time to open a many-shard dataset on S3: every `.idx` read serially vs concurrently.

    python bench/open_dataset.py [--shards 128] [--records 50] [--latency-ms 20]
                                 [--concurrency 16] [--repeat 3]

moto on loopback behind the fault proxy adding ``--latency-ms`` per request
(real S3's first-byte latency).  ``open_dataset`` needs one GET per `.idx` and
the shards' sizes: one listing of their folder (or, with ``CLOUDREC_S3_LIST=0``,
one ``info`` per shard); with ``concurrency=1`` those requests run one after
another, with ``concurrency=N`` they overlap in one bounded pool.  The same run
measures all three (fastest of ``--repeat``), checks that the tables are
identical, and prints the ratios (issue #13 item 3); the peer is an info and a
GET per shard straight through s3fs in a pool of the same size.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _common import figure, write_result  # noqa: E402
from cloudrec.dataset import open_dataset  # noqa: E402
from cloudrec.dataset.synthetic import write_synthetic  # noqa: E402


def _open(pattern: str, so, concurrency: int, repeat: int, listing: bool = True):
    before = os.environ.get("CLOUDREC_S3_LIST")
    os.environ["CLOUDREC_S3_LIST"] = "1" if listing else "0"
    try:
        return _timed(pattern, so, concurrency, repeat)
    finally:
        if before is None:
            os.environ.pop("CLOUDREC_S3_LIST", None)
        else:
            os.environ["CLOUDREC_S3_LIST"] = before


def _timed(pattern: str, so, concurrency: int, repeat: int):
    best, ds = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        ds = open_dataset(pattern, storage_options=so, concurrency=concurrency)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, ds


def _raw(pattern: str, so, concurrency: int, repeat: int) -> float:
    """The peer: the same info + .idx GET per shard straight through s3fs in a thread pool
    of the same size (no parsing, no checks): the floor this machine allows."""
    from concurrent.futures import ThreadPoolExecutor

    from cloudrec.dataset import expand_urls
    from cloudrec.storage.fs import resolve
    urls = expand_urls(pattern, so)
    fs, _ = resolve(urls[0], so)
    paths = [resolve(u, so)[1] for u in urls]

    def one(p: str) -> int:
        return int(fs.info(p)["size"]) + len(fs.cat_file(p[:-4] + ".idx"))
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, paths))
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=128)
    ap.add_argument("--records", type=int, default=50, help="records per shard")
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from cloudrec.testing import FaultProxy, MotoServer
    stack: List[Any] = []
    try:
        moto = MotoServer().start()
        stack.append(moto)
        bucket = moto.new_bucket("bench-open")
        write_synthetic(bucket + "/ds", args.shards, args.records, max_size=512, seed=0,
                        storage_options=moto.storage_options)
        proxy = FaultProxy(moto.endpoint_url).start()
        stack.append(proxy)
        proxy.configure(latency_ms=args.latency_ms)
        so = dict(proxy.storage_options)
        so.pop("config_kwargs", None)  # no injected faults: latency only
        pattern = bucket + "/ds/train-{0000..%04d}.rec" % (args.shards - 1)
        serial_s, serial = _open(pattern, so, 1, args.repeat)
        conc_s, conc = _open(pattern, so, args.concurrency, args.repeat)
        heads_s, heads = _open(pattern, so, args.concurrency, args.repeat, listing=False)
        raw_s = _raw(pattern, so, args.concurrency, args.repeat)
        for col in ("shard", "key", "offset", "length"):
            assert np.array_equal(getattr(conc.table, col), getattr(serial.table, col)), col
            assert np.array_equal(getattr(conc.table, col), getattr(heads.table, col)), col
        assert [(s.size, s.version) for s in conc.shards] == [(s.size, s.version)
                                                               for s in heads.shards]
        ratio = serial_s / conc_s
        print(f"{args.shards} shards, +{args.latency_ms:g} ms/request: serial {serial_s:.2f} s, "
              f"concurrency {args.concurrency} {conc_s:.2f} s -> {ratio:.1f}x "
              f"(open_seconds {conc.open_seconds}); a HEAD per shard instead of the listing "
              f"{heads_s:.2f} s; raw s3fs pool {raw_s:.2f} s (open_dataset / raw = "
              f"{conc_s / raw_s:.2f})")
        write_result("open_dataset", settings=vars(args),
                     results={"serial_s": serial_s, "concurrent_s": conc_s, "ratio": ratio,
                              "raw_pool_s": raw_s, "vs_raw_pool": conc_s / raw_s,
                              "heads_s": heads_s, "listing_vs_heads": heads_s / conc_s,
                              "records": len(conc), "open_seconds": conc.open_seconds},
                     figures=[figure(f"open {args.shards} shards: serial .idx/info", serial_s,
                                     "s"),
                              figure(f"open {args.shards} shards: concurrency "
                                     f"{args.concurrency}", conc_s, "s"),
                              figure("concurrent vs serial open", round(ratio, 1), "x"),
                              figure(f"open {args.shards} shards: a HEAD per shard "
                                     "(CLOUDREC_S3_LIST=0)", heads_s, "s"),
                              figure("one listing vs a HEAD per shard", round(heads_s / conc_s, 2),
                                     "x"),
                              figure("open_dataset time / raw s3fs pool (an info + a GET per "
                                     "shard) time", round(conc_s / raw_s, 2), "x",
                                     target="<= 1")],
                     title=f"open_dataset on S3 (moto + {args.latency_ms:g} ms proxy)")
    finally:
        for s in reversed(stack):
            s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
