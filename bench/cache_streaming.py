"""Progressive shard streaming: how soon a cold cache='shards' epoch hands out its first
record, with streaming (records served from the partial download) and without (a request
waits for its whole shard: ``CacheHook.stream = False``), plus reading ranges directly
(cache='none') - measured in the same run, rounds alternated.

    nice python bench/cache_streaming.py [--shards 2] [--shard-mb 32] [--record-kb 100]
                                         [--latency-ms 20] [--repeat 3]

moto on loopback behind the project's fault proxy adding ``--latency-ms`` per request;
order: shard by shard (ids in order), so the first record is at the start of a shard.
Prints seconds to the first record and to the end of the epoch, GETs, and the ratios;
writes bench/results/cache_streaming.json with the settings.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Dict

for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)

from cloudrec.dataset import open_dataset  # noqa: E402
from cloudrec.dataset.synthetic import write_synthetic  # noqa: E402
from cloudrec.reader.cached import CacheHook  # noqa: E402
from cloudrec.reader.fetch import RecordFetcher  # noqa: E402
from cloudrec.testing import FaultProxy, MotoServer  # noqa: E402


def one_epoch(ds: Any, proxy: FaultProxy, latency: float, mode: str) -> Dict[str, float]:
    cdir = tempfile.mkdtemp(prefix="cloudrec-bench-stream-")
    proxy.configure(latency_ms=latency)
    CacheHook.stream = mode != "whole-shard"
    cache = "none" if mode == "no-cache" else "shards"
    try:
        t0 = time.perf_counter()
        first = None
        n = 0
        with RecordFetcher(ds, cache=cache, cache_dir=cdir) as f:
            for _ in f.fetch(range(len(ds))):
                if first is None:
                    first = time.perf_counter() - t0
                n += 1
        total = time.perf_counter() - t0
        assert n == len(ds)
        return {"first_record_s": first, "epoch_s": total, "gets": proxy.stats()["requests"]}
    finally:
        CacheHook.stream = True
        shutil.rmtree(cdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--shard-mb", type=int, default=32)
    ap.add_argument("--record-kb", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "cache_streaming.json"))
    a = ap.parse_args()
    per = max(1, a.shard_mb * 1024 // a.record_kb)
    modes = ["streaming", "whole-shard", "no-cache"]
    runs: Dict[str, list] = {m: [] for m in modes}
    with MotoServer() as s3, FaultProxy(s3.endpoint_url) as proxy:
        bucket = s3.new_bucket("bench-stream")
        kb = a.record_kb * 1024
        urls, _ = write_synthetic(bucket, a.shards, per, seed=1, min_size=kb - 1024,
                                  max_size=kb + 1024, magic_every=0,
                                  storage_options=s3.storage_options)
        ds = open_dataset(urls, storage_options=proxy.storage_options)
        for r in range(a.repeat):
            for m in (modes if r % 2 == 0 else modes[::-1]):
                runs[m].append(one_epoch(ds, proxy, a.latency_ms, m))
    med = {m: {k: statistics.median(x[k] for x in runs[m]) for k in runs[m][0]} for m in modes}
    ratio_first = med["whole-shard"]["first_record_s"] / med["streaming"]["first_record_s"]
    ratio_epoch = med["whole-shard"]["epoch_s"] / med["streaming"]["epoch_s"]
    for m in modes:
        print(f"{m:>12}: first record {med[m]['first_record_s']:.3f} s, epoch "
              f"{med[m]['epoch_s']:.2f} s, {med[m]['gets']:.0f} GETs")
    print(f"streaming: first record {ratio_first:.1f}x sooner than waiting for the whole shard; "
          f"epoch {ratio_epoch:.2f}x")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump({"settings": vars(a), "records": len(ds), "bytes": ds.nbytes, "median": med,
                   "runs": runs, "first_record_ratio_whole_over_streaming": ratio_first,
                   "epoch_ratio_whole_over_streaming": ratio_epoch}, fh, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
