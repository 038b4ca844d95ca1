"""Per-process cost of the epoch order and partition as N and the world size grow (issue 18).

    python bench/scale.py [--sizes 1000000 10000000 100000000] [--modes global block shard]
                          [--world-size 2048] [--workers 8] [--timeout 300] [--no-full]

Each point runs in a fresh process: ``EpochSampler(N, mode, rank=5,
world_size=W, batch_size=256)`` with K DataLoader workers, time and peak RSS
(above the interpreter with numpy and cloudrec imported) until worker 3 holds
its first batch of epoch 1. ``lazy`` is the sampler's path (``epoch_slice``:
O(blocks) state plus this worker's own records); ``full`` is the earlier path,
measured in the same run: the whole ``epoch_order`` array, then
``partition_epoch`` of it. A point that exceeds ``--timeout`` is reported as
such (the full path at 100 M takes minutes and gigabytes). Writes
bench/results/scale.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r'''
import json, resource, sys, time
import numpy as np
from cloudrec.reader.orders import epoch_order
from cloudrec.reader.partition import partition_epoch
from cloudrec.reader.sampler import EpochSampler
a = json.loads(sys.argv[1])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # MB (Linux: KB)
base = rss()
t0 = time.perf_counter()
if a["path"] == "lazy":
    s = EpochSampler(a["n"], seed=1, mode=a["mode"], rank=5, world_size=a["W"], batch_size=256, epoch=1)
    s.use_workers(a["K"])
    sl = s.epoch_slice(3, a["K"])
else:
    order = epoch_order(a["n"], 1, 1, a["mode"])
    sl = partition_epoch(order, rank=5, world_size=a["W"], worker=3, num_workers=a["K"], batch_size=256)
ids, pad = sl.batch(0)
t = time.perf_counter() - t0
print(json.dumps({"seconds": t, "peak_mb": rss() - base, "base_mb": base, "batch": len(ids),
                  "slice_records": int(len(sl.ids)), "id_dtype": str(sl.ids.dtype)}))
'''


def point(n: int, mode: str, path: str, W: int, K: int, timeout: float) -> dict:
    arg = json.dumps({"n": n, "mode": mode, "path": path, "W": W, "K": K})
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"n": n, "mode": mode, "path": path, "timeout": timeout}
    if p.returncode != 0:
        return {"n": n, "mode": mode, "path": path, "error": p.stderr.strip().splitlines()[-1:]}
    out = json.loads(p.stdout)
    out.update(n=n, mode=mode, path=path, wall=time.perf_counter() - t0)
    return out


def fmt(r: dict) -> str:
    if "timeout" in r:
        return f"> {r['timeout']:.0f} s (timeout)"
    if "error" in r:
        return f"error {r['error']}"
    return f"{r['seconds']:7.3f} s {r['peak_mb']:8.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    ap.add_argument("--modes", nargs="+", default=["global", "block", "shard"])
    ap.add_argument("--world-size", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--no-full", action="store_true", help="skip the full-order baseline")
    a = ap.parse_args()
    print(f"rank 5 of {a.world_size}, worker 3 of {a.workers}, batch 256, epoch 1; "
          "time and peak RSS above the interpreter until the first batch")
    rows = []
    for n in a.sizes:
        for mode in a.modes:
            lazy = point(n, mode, "lazy", a.world_size, a.workers, a.timeout)
            rows.append(lazy)
            line = f"N={n:>11,} {mode:7} lazy {fmt(lazy)}"
            if not a.no_full:
                full = point(n, mode, "full", a.world_size, a.workers, a.timeout)
                rows.append(full)
                line += f"   full {fmt(full)}"
                if "seconds" in lazy and "seconds" in full:
                    line += f"   x{full['seconds'] / max(lazy['seconds'], 1e-9):.0f} time"
            print(line, flush=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import figure, write_result
    figures = []
    top = max(a.sizes)
    for r in rows:
        if r["n"] != top or "seconds" not in r or r["mode"] not in ("global", "block"):
            continue
        tag = f"`{r['mode']}` {r['path']}"
        lazy = r["path"] == "lazy"
        figures.append(figure(tag, round(r["seconds"], 3), "s", "<= 0.5 s" if lazy else None,
                              group=f"first batch at {top / 1e6:.0f} M x {a.world_size} ranks x {a.workers} workers"))
        figures.append(figure(tag, round(r["peak_mb"], 1), "MB", "<= 100 MB" if lazy else None,
                              group="peak RSS above the interpreter"))
    write_result("scale", {**vars(a), "rank": 5, "worker": 3, "batch_size": 256, "epoch": 1},
                 {"rows": rows}, figures, title="order + partition per process (issue 18)")


if __name__ == "__main__":
    main()
