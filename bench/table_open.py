"""How fast a process opens a dataset from its compact table (issue #18.2).

    python bench/table_open.py [--records 100000000] [--shards 1000] [--procs 3]
                               [--baseline-records 2000000]

Writes a synthetic table of ``--records`` records over ``--shards`` local
shards (sparse .rec files of the right sizes, small .idx stand-ins: nothing
reads record bytes), then opens it with ``open_dataset(urls, table=...)`` in
``--procs`` fresh processes one after another (the first maps a file the
writer left in the page cache, as the first process of a node after its
download would).  Each open includes the freshness listing and builds the
ShardedDataset.  Baseline in the same run: opening a dataset of
``--baseline-records`` real records from its .idx files, with and without a
table, so the ratio is measured, not assumed.  JSON: bench/results/table_open.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


PROBE = """
import sys, time, json
t0 = time.perf_counter()
from cloudrec.dataset import open_dataset
t1 = time.perf_counter()
urls = json.load(open(sys.argv[1]))
ds = open_dataset(urls, table=sys.argv[2]) if sys.argv[2] != "-" else open_dataset(urls)
t2 = time.perf_counter()
assert len(ds) == int(sys.argv[3]), len(ds)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "max_rss_mb": int(hwm) / 1024}))
"""


def _probe(urls_file: str, table: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, urls_file, table, str(n)], check=True,
                         capture_output=True, text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def synthetic_table(folder: str, records: int, shards: int) -> tuple:
    from cloudrec.dataset.table_file import _listing, table_parts, write_table_parts
    from cloudrec.sim.source import synthetic
    sim = synthetic(records, shards, mean_bytes=110_000, dist="fixed")
    urls = []
    for s in sim.shards:
        name = os.path.join(folder, os.path.basename(s.rec_url))
        with open(name, "wb") as fh:
            fh.truncate(s.size)                       # sparse: no disk used
        with open(name[:-4] + ".idx", "wb") as fh:
            fh.write(b"0\t0\n")
        urls.append(name)
    from cloudrec.dataset.shards import stat_shards
    shards = stat_shards(urls)
    listing = _listing([u[:-4] + ".idx" for u in urls], None)
    facts = [{"rec": s.rec_url, "idx": s.rec_url[:-4] + ".idx", "rec_size": s.size,
              "rec_version": s.version, "idx_size": int(listing[s.rec_url[:-4] + ".idx"]["size"]),
              "idx_version": __import__("cloudrec.dataset.shards", fromlist=["_version"])._version(
                  listing[s.rec_url[:-4] + ".idx"])} for s in shards]
    path = os.path.join(folder, "train.crtable")
    t0 = time.perf_counter()
    write_table_parts(path, table_parts(sim.table, facts))
    return urls, path, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000_000)
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--baseline-records", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    res = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="cloudrec-table-") as tmp:
        big = os.path.join(tmp, "big")
        os.makedirs(big)
        urls, table, write_s = synthetic_table(big, args.records, args.shards)
        with open(os.path.join(tmp, "big.json"), "w") as fh:
            json.dump(urls, fh)
        res["table_bytes"] = os.path.getsize(table)
        res["write_s"] = write_s
        runs = [_probe(os.path.join(tmp, "big.json"), table, args.records) for _ in range(args.procs)]
        res["table_opens"] = runs
        print(f"table of {args.records:,} records ({res['table_bytes'] / 1e9:.2f} GB) written in "
              f"{write_s:.1f} s; opens: " + ", ".join(f"{r['open_s']:.3f} s" for r in runs)
              + f" (max RSS {max(r['max_rss_mb'] for r in runs):.0f} MB)", flush=True)
        # baseline: real .idx files of baseline-records records
        small = os.path.join(tmp, "small")
        os.makedirs(small)
        from cloudrec.dataset.synthetic import write_synthetic
        from cloudrec.dataset.table_file import write_table
        per = args.baseline_records // 100
        surls, _ = write_synthetic(small, 100, per, min_size=0, max_size=0, magic_every=0)
        with open(os.path.join(tmp, "small.json"), "w") as fh:
            json.dump(surls, fh)
        stable = os.path.join(small, "train.crtable")
        write_table(surls, stable)
        n = 100 * per
        idx = min((_probe(os.path.join(tmp, "small.json"), "-", n) for _ in range(2)),
                  key=lambda r: r["open_s"])
        tab = min((_probe(os.path.join(tmp, "small.json"), stable, n) for _ in range(2)),
                  key=lambda r: r["open_s"])
        res["baseline"] = {"records": n, "shards": 100, "idx_open_s": idx["open_s"],
                           "table_open_s": tab["open_s"], "speedup": idx["open_s"] / tab["open_s"]}
        print(f"{n:,} records in 100 local shards: from .idx files {idx['open_s']:.3f} s, "
              f"from the table {tab['open_s']:.3f} s ({idx['open_s'] / tab['open_s']:.1f}x)")
    res["target_open_s"] = 1.0
    res["max_open_after_first_s"] = max(r["open_s"] for r in runs[1:]) if len(runs) > 1 else None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import figure, write_result
    figs = [figure("after the first process (max)", res["max_open_after_first_s"] or runs[0]["open_s"],
                   "s", target="<= 1 s"),
            figure("peak RSS", max(r["max_rss_mb"] for r in runs), "MB"),
            figure(f"{res['baseline']['records']:,} records: table vs .idx files",
                   res["baseline"]["speedup"], "x")]
    write_result("table_open", dict(vars(args)), res, figs,
                 title=f"open_dataset from the compact table, {args.records:,} records in "
                       f"{args.shards:,} local shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
