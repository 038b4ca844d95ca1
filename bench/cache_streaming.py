"""Progressive shard streaming: how soon a cold cache='shards' epoch hands out its first
record, with streaming (records served from the partial download) and without (a request
waits for its whole shard: ``CacheHook.stream = False``), plus reading ranges directly
(cache='none') - measured in the same run, rounds alternated.

    nice python bench/cache_streaming.py [--shards 2] [--shard-mb 32] [--record-kb 100]
                                         [--latency-ms 20] [--mb-per-s 60] [--repeat 3]

moto on loopback behind the project's fault proxy adding ``--latency-ms`` per request
and pacing each answer to ``--mb-per-s`` (one S3 connection's rate);
order: shard by shard (ids in order), so the first record is at the start of a shard.
Prints seconds to the first record and to the end of the epoch, GETs, and the ratios;
writes bench/results/cache_streaming.json (``_common.write_result``) with the settings.
"""
from __future__ import annotations

import argparse
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


def one_epoch(ds: Any, proxy: FaultProxy, latency: float, mode: str,
              mb_per_s: float = 0.0) -> Dict[str, float]:
    cdir = tempfile.mkdtemp(prefix="cloudrec-bench-stream-")
    proxy.configure(latency_ms=latency, mb_per_s=mb_per_s)
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
    ap.add_argument("--mb-per-s", type=float, default=60.0,
                    help="each answer's body paced to this rate (S3 gives one connection "
                         "~50-100 MB/s); 0: as fast as moto and the proxy go on loopback")
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
                runs[m].append(one_epoch(ds, proxy, a.latency_ms, m, a.mb_per_s))
    med = {m: {k: statistics.median(x[k] for x in runs[m]) for k in runs[m][0]} for m in modes}
    ratio_first = med["whole-shard"]["first_record_s"] / med["streaming"]["first_record_s"]
    ratio_epoch = med["whole-shard"]["epoch_s"] / med["streaming"]["epoch_s"]
    for m in modes:
        print(f"{m:>12}: first record {med[m]['first_record_s']:.3f} s, epoch "
              f"{med[m]['epoch_s']:.2f} s, {med[m]['gets']:.0f} GETs")
    print(f"streaming: first record {ratio_first:.1f}x sooner than waiting for the whole shard; "
          f"epoch {ratio_epoch:.2f}x")
    from _common import figure, write_result
    nomiss = med["no-cache"]
    figs = [figure("first record, whole-shard wait / streaming", ratio_first, "x",
                   note="the record at a shard's start, its shard still downloading",
                   group="streaming (records served from the partial download) against "
                         "waiting for the whole shard"),
            figure("epoch, whole-shard wait / streaming", ratio_epoch, "x",
                   group="streaming (records served from the partial download) against "
                         "waiting for the whole shard"),
            figure("first record, streaming / no cache", med["streaming"]["first_record_s"]
                   / nomiss["first_record_s"], "x", group="against reading ranges uncached"),
            figure("epoch, streaming / no cache", med["streaming"]["epoch_s"] / nomiss["epoch_s"],
                   "x", group="against reading ranges uncached")]
    settings = {k: v for k, v in vars(a).items() if k != "out"}
    settings.update(records=len(ds), bytes=ds.nbytes, order="file (shard by shard)",
                    store="moto + fault proxy on loopback")
    write_result("cache_streaming", settings, {"median": med, "runs": runs}, figs,
                 title=f"cold cache='shards' epoch, {a.shards} x {a.shard_mb} MB shards of "
                       f"{a.record_kb} KB records, S3 (moto) +{a.latency_ms:g} ms/request"
                       + (f", {a.mb_per_s:g} MB/s per connection" if a.mb_per_s else ""))


if __name__ == "__main__":
    main()
