"""Read throughput of MXRecordIO (sequential) and MXIndexedRecordIO.read_idx
(shuffled) on local disk, as a ratio to a raw ``f.read`` of the same file in
the same run.

    python bench/recordio_read.py [--size-mb 512] [--record-kb 110] [--dir /tmp]

The file is written once (random payloads, some with aligned magic words so
multi-part records are exercised) and read after a warm-up pass, so every
reader sees the page cache alike.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import numpy as np

from cloudrec.format.framing import MAGIC_BYTES
from cloudrec.recordio import MXIndexedRecordIO, MXRecordIO


def make_dataset(folder: str, size_mb: int, record_kb: int) -> tuple:
    rec, idx = os.path.join(folder, "bench.rec"), os.path.join(folder, "bench.idx")
    rng = np.random.default_rng(0)
    n = size_mb * 1024 // record_kb
    with MXIndexedRecordIO(idx, rec, "w") as w:
        for i in range(n):
            size = int(rng.integers(record_kb * 512, record_kb * 1536))
            payload = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            if i % 10 == 0:
                payload[64:68] = MAGIC_BYTES
            w.write_idx(i, bytes(payload))
    return rec, idx, n


def timed(fn) -> tuple:
    t0 = time.perf_counter()
    nbytes = fn()
    return nbytes, time.perf_counter() - t0


def raw_read(rec: str) -> int:
    total = 0
    with open(rec, "rb", buffering=0) as f:
        while True:
            b = f.read(8 << 20)
            if not b:
                return total
            total += len(b)


def sequential(rec: str) -> int:
    total = 0
    with MXRecordIO(rec, "r") as r:
        for payload in r:
            total += len(payload)
    return total


def shuffled(rec: str, idx: str) -> int:
    total = 0
    with MXIndexedRecordIO(idx, rec, "r") as r:
        keys = list(r.keys)
        random.Random(1).shuffle(keys)
        for k in keys:
            total += len(r.read_idx(k))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--record-kb", type=int, default=110)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        rec, idx, n = make_dataset(folder, args.size_mb, args.record_kb)
        size = os.path.getsize(rec)
        raw_read(rec)  # warm the page cache
        results = {}
        for name, fn in [("raw f.read", lambda: raw_read(rec)),
                         ("MXRecordIO sequential", lambda: sequential(rec)),
                         ("MXIndexedRecordIO shuffled read_idx", lambda: shuffled(rec, idx))]:
            best = min((timed(fn) for _ in range(3)), key=lambda t: t[1])
            results[name] = best
        raw_mbs = size / results["raw f.read"][1] / 1e6
        print(f"file: {size / 1e6:.0f} MB, {n} records of ~{args.record_kb} KB")
        print(f"{'reader':40s} {'MB/s':>8s} {'ratio to raw':>13s}")
        for name, (nbytes, secs) in results.items():
            mbs = size / secs / 1e6
            print(f"{name:40s} {mbs:8.0f} {mbs / raw_mbs:13.2f}")
    from _common import figure, write_result  # bench/ is sys.path[0]
    rates = {name: size / secs / 1e6 for name, (_, secs) in results.items()}
    write_result(
        "recordio_read", settings={"size_mb": args.size_mb, "record_kb": args.record_kb,
                                   "records": n, "file_bytes": size, "best_of": 3,
                                   "page_cache": "warm"},
        results={name: {"MB_per_s": r, "ratio_to_raw": r / raw_mbs} for name, r in rates.items()},
        figures=[figure("`MXRecordIO` sequential", rates["MXRecordIO sequential"] / raw_mbs, "x",
                        note=f"raw `f.read` {raw_mbs:,.0f} MB/s"),
                 figure("`MXIndexedRecordIO.read_idx` shuffled",
                        rates["MXIndexedRecordIO shuffled read_idx"] / raw_mbs, "x",
                        target=">= 0.5x")],
        title=f"RecordIO read, {size / 1e6:.0f} MB local `.rec`, vs raw `f.read`")


if __name__ == "__main__":
    main()
