"""What checking every record against the table's CRC32 costs (``cloudrec index --table --crc``).

    python bench/record_crc.py [--n 2000] [--shards 8] [--rounds 5] [--workdir DIR]

The photo dataset of ``bench/peers.py`` (``--n`` JPEGs of ~70 KB, ``--shards``
shards) on the local disk, warm in the page cache, so the check is the only
difference and is not hidden behind I/O.  In each round, alternated:

* one RecordFetcher reading every record in ``block`` order from a table without
  CRCs (the baseline) and from the same table with CRCs (every record checked);
* the same, each record also decoded to pixels with OpenCV (what a training
  input pipeline does with it), to show the check's share of a real epoch;
* writing the table, with and without ``--crc`` (the CRC pass reads every shard once).

Prints the fastest round's seconds and the ratios; JSON in bench/results/record_crc.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _epoch(ds: Any, order: np.ndarray, decode: bool) -> float:
    from cloudrec.reader.fetch import RecordFetcher
    from cloudrec.recordio import unpack
    t0 = time.perf_counter()
    with RecordFetcher(ds) as f:
        n = 0
        for _, payload in f.fetch(order):
            if decode:
                _, img = unpack(payload)
                cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
            n += 1
    assert n == len(order)
    return time.perf_counter() - t0


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", default=None, help="keep the generated photos here")
    args = ap.parse_args(argv)
    import peers
    from _common import figure, write_result

    from cloudrec.dataset import open_dataset
    from cloudrec.dataset.table_file import write_table
    from cloudrec.reader.orders import epoch_order
    workdir = args.workdir or os.path.join(tempfile.gettempdir(), "cloudrec-bench-peers")
    os.makedirs(workdir, exist_ok=True)
    images = peers.make_images(workdir, args.n)
    stage = tempfile.mkdtemp(prefix="cloudrec-crc-")
    try:
        urls = [u for u in peers.write_cloudrec(images, os.path.join(stage, "rec"), args.shards)
                if u.endswith(".rec")]
        plain_t, crc_t = os.path.join(stage, "plain.crtable"), os.path.join(stage, "crc.crtable")
        cases: Dict[str, Callable[[], float]] = {}

        def timed(fn: Callable[[], Any]) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        cases["write table"] = lambda: timed(lambda: write_table(urls, plain_t))
        cases["write table --crc"] = lambda: timed(lambda: write_table(urls, crc_t, crc=True,
                                                                       progress=False))
        for c in ("write table", "write table --crc"):
            cases[c]()
        plain, checked = open_dataset(urls, table=plain_t), open_dataset(urls, table=crc_t)
        assert plain.table.crc is None and checked.table.crc is not None
        order = epoch_order(plain, 0, 0, "block")
        for decode in (False, True):
            tag = ", decoded" if decode else ""
            cases[f"read{tag}"] = lambda d=decode: _epoch(plain, order, d)
            cases[f"read, checked{tag}"] = lambda d=decode: _epoch(checked, order, d)
        times: Dict[str, List[float]] = {k: [] for k in cases}
        for r in range(args.rounds):
            for k in (list(cases) if r % 2 == 0 else list(cases)[::-1]):
                times[k].append(cases[k]())
            print("  round", r + 1, {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    mb = sum(len(b) for b, _ in images) / 1e6
    results = {"best_s": best, "rounds_s": times,
               "checked_over_plain": best["read, checked"] / best["read"],
               "checked_over_plain_decoded": best["read, checked, decoded"] / best["read, decoded"],
               "crc_write_over_plain_write": best["write table --crc"] / best["write table"],
               "crc_pass_mb_per_s": mb / best["write table --crc"]}
    for k, v in results.items():
        if not isinstance(v, dict):
            print(f"{k}: {v:.3f}")
    settings = {"n": args.n, "shards": args.shards, "rounds": args.rounds, "dataset_MB": round(mb, 1),
                "store": "local disk, page cache warm", "order": "block", "fetcher": "RecordFetcher, 1"}
    figs = [figure("read, checked / not checked", results["checked_over_plain"], "x",
                   group="time of one epoch, records checked against the table's CRC32"),
            figure("read + OpenCV decode, checked / not checked",
                   results["checked_over_plain_decoded"], "x",
                   group="time of one epoch, records checked against the table's CRC32"),
            figure("`cloudrec index --table --crc` / without `--crc`",
                   results["crc_write_over_plain_write"], "x", note="reads every shard once")]
    write_result("record_crc", settings, results, figs,
                 title=f"record CRC checks, {args.n} JPEGs (~{mb / args.n * 1000:.0f} KB) in "
                       f"{args.shards} local shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
