"""Shuffle quality vs read friendliness of the epoch order modes (no IO: pure order statistics).

    python bench/orders.py [--records 100000] [--shards 8] [--lookahead 2048]

For each mode, against a uniform permutation (``global``) measured in the same run:
  disp   mean |order position - file position| / N       (uniform: 1/3)
  rho    Spearman rank correlation with file order        (uniform: 0)
  near   fraction of file-neighbour pairs that land within 256 positions of
         each other in the order (local correlation; uniform: ~512/N)
  run    mean length of runs of file-adjacent records in the order
  reqs   byte-range requests per 1,000 records for a planner that looks
         ``lookahead`` records ahead and merges records of one shard that are
         at most ``max_gap`` records apart; xglobal = reqs / reqs(global)
  amp    read amplification of those merged requests (records fetched / needed)
  ms     time to compute the order
(block/il is block mode with within='interleave'.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

from cloudrec.reader.orders import DEFAULT_BLOCK_BYTES, epoch_order, file_order


def make_table(records: int, shards: int) -> SimpleNamespace:
    per = -(-records // shards)
    shard = np.minimum(np.arange(records) // per, shards - 1).astype(np.int32)
    offset = (np.arange(records) - shard.astype(np.int64) * per) * 110_000
    return SimpleNamespace(shard=shard, offset=offset, length=np.full(records, 110_000, np.int64))


def stats(order: np.ndarray, table: SimpleNamespace, lookahead: int, max_gap: int) -> dict:
    base = file_order(table)
    n = len(base)
    pos_of = np.empty(n, np.int64)
    pos_of[base] = np.arange(n)
    p = pos_of[order]                     # file position of each emitted record
    disp = float(np.mean(np.abs(p - np.arange(n)))) / n
    rho = float(np.corrcoef(p, np.arange(n))[0, 1])
    where = np.empty(n, np.int64)         # order position of each file position
    where[p] = np.arange(n)
    near = float(np.mean(np.abs(np.diff(where)) <= 256))
    breaks = np.count_nonzero(np.diff(p) != 1) + 1
    shard_of_pos = table.shard[base]
    reqs = fetched = 0
    for i in range(0, n, lookahead):
        q = np.sort(p[i:i + lookahead])
        s = shard_of_pos[q]
        cut = (np.diff(q) > 1 + max_gap) | (np.diff(s) != 0)
        reqs += 1 + np.count_nonzero(cut)
        starts = np.concatenate([[0], np.flatnonzero(cut) + 1])
        ends = np.concatenate([np.flatnonzero(cut), [len(q) - 1]])
        fetched += int(np.sum(q[ends] - q[starts] + 1))
    return {"disp": disp, "rho": rho, "near": near, "run": n / breaks, "reqs": 1000 * reqs / n,
            "amp": fetched / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--lookahead", type=int, default=2048)
    ap.add_argument("--max-gap", type=int, default=2, help="records a merged request may skip")
    ap.add_argument("--block-size", type=int, default=None,
                    help="records per block (default: the reader's, --block-bytes worth)")
    ap.add_argument("--block-bytes", type=int, default=DEFAULT_BLOCK_BYTES,
                    help="block size in bytes when --block-size is not given (reader default)")
    ap.add_argument("--window-blocks", type=int, default=8)
    ap.add_argument("--buffer-size", type=int, default=4096)
    a = ap.parse_args()
    table = make_table(a.records, a.shards)
    block_size = a.block_size or max(1, round(a.block_bytes / float(np.mean(table.length))))
    opts = {"block_size": block_size, "window_blocks": a.window_blocks, "buffer_size": a.buffer_size}
    print(f"N={a.records} shards={a.shards} lookahead={a.lookahead} max_gap={a.max_gap} {opts}")
    print(f"{'mode':8} {'disp':>6} {'rho':>6} {'near':>6} {'run':>9} {'reqs/1k':>8} {'xglobal':>8} {'amp':>5} {'ms':>7}")
    rows = {}
    modes = [("global", {}), ("block", {}), ("block/il", {"within": "interleave"}), ("shard", {}),
             ("none", {})]
    for mode, extra in modes:
        t0 = time.perf_counter()
        o = epoch_order(table, 0, 1, mode.split("/")[0], **opts, **extra)
        ms = 1000 * (time.perf_counter() - t0)
        rows[mode] = r = stats(o, table, a.lookahead, a.max_gap)
        ratio = r["reqs"] / rows["global"]["reqs"]
        print(f"{mode:8} {r['disp']:6.3f} {r['rho']:6.3f} {r['near']:6.3f} {r['run']:9.1f} "
              f"{r['reqs']:8.1f} {ratio:8.4f} {r['amp']:5.2f} {ms:7.1f}")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import figure, write_result
    figures = [figure(f"`{m}`", r["reqs"], group="ranged requests per 1,000 records")
               for m, r in rows.items()]
    figures.append(figure("`block` vs `global` requests", rows["block"]["reqs"] / rows["global"]["reqs"],
                          "x"))
    figures += [figure(f"`{m}`", rows[m]["disp"], group="mixing (mean displacement/N; uniform 0.333)")
                for m in ("global", "block", "shard")]
    write_result(
        "orders", settings={"records": a.records, "shards": a.shards, "lookahead": a.lookahead,
                            "max_gap": a.max_gap, "record_bytes": int(table.length[0]),
                            "block_bytes": block_size * int(table.length[0]), **opts},
        results=rows, figures=figures,
        title=f"epoch orders, {a.records:,} records, {a.shards} shards")


if __name__ == "__main__":
    main()
