"""Bytes moved per record read when ranks x DataLoader workers each plan their own reads.

    python bench/assign.py [--records 2000] [--record-kb 70] [--shards 8] [--batch 64] [--name assign]

No IO: every worker's record ids (``EpochSampler.epoch_slice``) go through the
fetcher's own cut into windows of ``--window-mb`` of records and the real
planner (:func:`plan_ranges`, ``--max-gap-kb`` merging); bytes moved = the
planned requests' bytes over all workers, read = the records' bytes (pads
included, as the fetcher reads them). The baseline in the same run is the
earlier layout: global steps of W x B dealt to ranks, batch i of a rank to
worker i % K (so consecutive batches alternate between workers).
Columns: amp = bytes moved / bytes read (old: the earlier layout; aligned: the same
slices read as RecordIterableDataset reads them, with the slice's hints: the
fetcher's own look-ahead windows cut at ``EpochSlice.chunk_starts`` (whole
shuffle windows per plan), block/shard slices merging only touching records,
and other slices' merged gaps capped at ``--max-waste`` of their records' bytes,
the object-store default without a cache, i.e. without the workers' spool); reqs/1k = requests per 1,000 records;
eighths = mean distinct eighths of the dataset (file order) in a batch (8 = uniform).
Defaults mirror issue 13's storage bench (2,000 photos of ~70 KB in 8 shards,
batch 64, 4 MB blocks, 32 MB fetch windows, 256 KB max gap).
"""
from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace

import numpy as np

from cloudrec.options import FETCH_DEFAULTS
from cloudrec.reader.orders import epoch_order, file_order
from cloudrec.reader.planner import plan_ranges
from cloudrec.reader.sampler import EpochSampler

MODES = [("global", {}), ("block", {}), ("block/il", {"within": "interleave"}), ("shard", {}),
         ("none", {})]


class _Table(SimpleNamespace):
    """shard/offset/length columns, sized like a RecordTable."""

    def __len__(self) -> int:
        return len(self.length)


def make_table(records: int, shards: int, record_bytes: int) -> _Table:
    per = -(-records // shards)
    shard = np.minimum(np.arange(records) // per, shards - 1).astype(np.int32)
    offset = (np.arange(records) - shard.astype(np.int64) * per) * record_bytes
    return _Table(shard=shard, offset=offset, length=np.full(records, record_bytes, np.int64))


def windows(ids: np.ndarray, lengths: np.ndarray, window_bytes: int):
    """RecordFetcher._windows: consecutive runs of about ``window_bytes`` of records."""
    if ids.size == 0:
        return
    csum = np.cumsum(lengths[ids])
    cuts = np.searchsorted(csum, np.arange(1, int(csum[-1] // window_bytes) + 1) * window_bytes,
                           side="right")
    prev = 0
    for c in cuts.tolist():
        c = max(c, prev + 1)
        if c > ids.size:
            break
        yield ids[prev:c]
        prev = c
    if prev < ids.size:
        yield ids[prev:]


def io_cost(worker_ids, table, window_bytes: int, max_gap: int, slices=None,
            max_waste=None) -> tuple[int, int, int]:
    """(bytes moved, bytes read, requests) of all workers; with ``slices``, as
    ``RecordIterableDataset`` fetches them: ``RecordFetcher.fetch(ids,
    chunk_starts=sl.chunk_starts, touching_only=sl.exclusive is not None)``, i.e. the
    fetcher's own window cutting, then the planner with gap 0 for block/shard slices."""
    from cloudrec.reader.fetch import RecordFetcher
    fetcher = RecordFetcher(SimpleNamespace(table=table, shards=[]), window_bytes=window_bytes)
    moved = read = reqs = 0
    for j, ids in enumerate(worker_ids):
        read += int(table.length[ids].sum())
        sl = None if slices is None else slices[j]
        if sl is None:
            cut, g = windows(ids, table.length, window_bytes), max_gap
        else:
            cut = fetcher._windows(ids, sl.chunk_starts)
            g = 0 if sl.exclusive is not None else max_gap
        for w in cut:
            plan = plan_ranges(table.shard[w], table.offset[w], table.length[w], g,
                               max_waste=None if sl is None else max_waste)
            moved += plan.nbytes
            reqs += len(plan)
    return moved, read, reqs


def old_layout(order: np.ndarray, W: int, K: int, B: int):
    """The earlier assignment: rank r's step-g batch = order[g*W*B + r*B:][:B], worker g % K."""
    n = len(order)
    steps = -(-n // (W * B))
    for r in range(W):
        for k in range(K):
            g = np.arange(k, steps, K)
            pos = (g[:, None] * W * B + r * B + np.arange(B)[None, :]).reshape(-1)
            yield order[np.where(pos < n, pos, (pos - n) % n)], pos.reshape(-1, B)


def eighths(batches, where: np.ndarray, n: int) -> float:
    got = [len(np.unique(where[b] * 8 // n)) for b in batches if len(b)]
    return float(np.mean(got)) if got else 0.0


def run(a) -> dict:
    table = make_table(a.records, a.shards, a.record_kb * 1000)
    n = a.records
    where = np.empty(n, np.int64)
    where[file_order(table)] = np.arange(n)
    wb, gap = a.window_mb << 20, a.max_gap_kb << 10
    rows = []
    for W, K in [(1, 1), (1, 2), (1, 4), (1, 8), (2, 2), (2, 8)]:
        for mode, extra in MODES:
            m = mode.split("/")[0]
            opts = dict(extra)
            order = epoch_order(table, 0, 1, m, **opts)
            old = list(old_layout(order, W, K, a.batch))
            o_moved, o_read, o_reqs = io_cost([ids for ids, _ in old], table, wb, gap)
            new_ids, new_batches, new_starts = [], [], []
            for r in range(W):
                s = EpochSampler(table, seed=0, epoch=1, mode=m, rank=r, world_size=W,
                                 batch_size=a.batch, order_options=opts)
                for k in range(K):
                    sl = s.epoch_slice(k, K)
                    new_ids.append(sl.ids.astype(np.int64))
                    new_starts.append(sl)
                    new_batches += [ids[~pad].astype(np.int64) for ids, pad in sl.batches()]
            moved, read, reqs = io_cost(new_ids, table, wb, gap)
            a_moved, _, a_reqs = io_cost(new_ids, table, wb, gap, new_starts, a.max_waste)
            old_batches = [ids.reshape(-1, a.batch)[i][pos[i] < n] for ids, pos in old
                           for i in range(len(pos))]
            row = {"world_size": W, "workers": K, "mode": mode, "amp": moved / read,
                   "amp_old": o_moved / o_read, "reqs_per_1k": 1000 * reqs / n,
                   "reqs_per_1k_old": 1000 * o_reqs / n, "amp_aligned": a_moved / read,
                   "reqs_per_1k_aligned": 1000 * a_reqs / n, "moved_mb": moved / 1e6,
                   "moved_mb_old": o_moved / 1e6, "read_mb": read / 1e6,
                   "eighths": eighths(new_batches, where, n), "eighths_old": eighths(old_batches, where, n)}
            rows.append(row)
            print(f"W={W} K={K} {mode:8} amp {row['amp']:5.3f} (old {row['amp_old']:5.3f}, "
                  f"aligned {row['amp_aligned']:5.3f})  "
                  f"reqs/1k {row['reqs_per_1k']:7.1f} (old {row['reqs_per_1k_old']:7.1f}, "
                  f"aligned {row['reqs_per_1k_aligned']:6.1f})  "
                  f"MB {row['moved_mb']:7.1f} (old {row['moved_mb_old']:7.1f}) of {row['read_mb']:7.1f}  "
                  f"eighths {row['eighths']:4.2f} (old {row['eighths_old']:4.2f})")
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--record-kb", type=int, default=70)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--window-mb", type=int, default=32, help="fetcher window (readahead / 4)")
    ap.add_argument("--max-gap-kb", type=int, default=256)
    ap.add_argument("--max-waste", type=float,
                    default=FETCH_DEFAULTS["object"]["uncached_max_waste"],
                    help="gap cap of the aligned reads (the object-store default without a cache)")
    ap.add_argument("--name", default="assign", help="results name (bench/results/NAME.json)")
    a = ap.parse_args()
    print(f"N={a.records} x {a.record_kb} KB in {a.shards} shards, batch {a.batch}, "
          f"window {a.window_mb} MB, max_gap {a.max_gap_kb} KB")
    out = run(a)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import figure, write_result
    figures = []
    for r in out["rows"]:
        if r["world_size"] == 1 and r["workers"] == 2:
            for key, label in (("amp_old", "earlier layout"), ("amp", "spans"), ("amp_aligned", "spans + hints + cap")):
                figures.append(figure(f"`{r['mode']}` {label}", round(r[key], 3), "x",
                                      "<= 1.02x" if key != "amp_old" else None,
                                      group="bytes moved / bytes read, 2 workers"))
    write_result(a.name, vars(a), out, figures, title="bytes moved per worker layout (issue 13.1)")


if __name__ == "__main__":
    main()
