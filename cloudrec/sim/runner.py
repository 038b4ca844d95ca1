"""``simulate``: one epoch of a job, counted by the readers' code and timed by a model.

Counts (GETs, bytes, per rank and node, cache disk) come from running the
same ``EpochSampler.epoch_slice`` / ``RecordFetcher`` window cutting
/ planner that the DataLoader workers run (see :mod:`cloudrec.sim.trace`);
only times come from :mod:`cloudrec.sim.timing` (storage latency and bandwidth,
request rate per prefix, and the CPU of :class:`HostModel` on the node's cores).
A worker's order + slice CPU time is measured on this machine, not modelled.
"""
from __future__ import annotations

import inspect
import time
from typing import Any, Dict, List, Optional

import numpy as np

from cloudrec.options import FETCH_DEFAULTS
from cloudrec.reader.fetch import RecordFetcher
from cloudrec.reader.sampler import EpochSampler
from cloudrec.reader.spool import SCATTERED_MODES, fits_read_ahead
from cloudrec.sim import timing
from cloudrec.sim.model import HostModel, JobSpec, StorageModel, settings
from cloudrec.sim.quality import quality
from cloudrec.sim.source import SimDataset
from cloudrec.sim.trace import Requests, plan_streams, streams

_FETCH_KEYS = ("max_gap", "max_request", "max_waste", "concurrency", "readahead_bytes",
               "window_bytes")
QUALITY_STREAMS = 64
LIST_PAGE = 1000       # objects per LIST page (S3)
OPEN_CONCURRENCY = 16  # open_dataset's default


def _stats(v: np.ndarray) -> Dict[str, float]:
    v = np.asarray(v, float)
    return {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max())}


def _sampled_nodes(job: JobSpec) -> List[int]:
    if not job.sample_ranks or job.sample_ranks >= job.world_size:
        return list(range(job.nodes))
    k = max(1, -(-job.sample_ranks // job.ranks_per_node))
    return sorted(set(np.linspace(0, job.nodes - 1, k).round().astype(int).tolist()))


def _download_gets(sizes: np.ndarray, chunk: int) -> np.ndarray:
    """GETs the cache's downloader makes per shard: its own chunk plan when it has one."""
    try:
        from cloudrec.storage.cache_download import chunk_bounds
    except ImportError:
        return -(-sizes // chunk)
    return np.array([len(chunk_bounds(int(s), chunk)) for s in sizes.tolist()], np.int64)


def _plan_in_chunks(table: Any, sts: List[Any], max_gap: int, max_request: int,
                    max_waste: Optional[float] = None,
                    chunk_records: int = 2_000_000) -> Requests:
    """:func:`plan_streams` over runs of whole streams of about ``chunk_records`` records
    (requests never span streams, so the result is the same): smaller sorts and
    temporaries, which is faster and lighter for tens of millions of records."""
    parts, first, acc = [], 0, 0
    for i, s in enumerate(sts):
        acc += len(s.ids)
        if acc >= chunk_records or i == len(sts) - 1:
            r = plan_streams(table, sts[first:i + 1], max_gap, max_request, max_waste)
            r.stream = r.stream + first
            parts.append(r)
            first, acc = i + 1, 0
    if len(parts) == 1:
        return parts[0]
    return Requests(*(np.concatenate([getattr(r, f) for r in parts])
                      for f in ("stream", "window", "shard", "start", "end", "need")))


def _first_batch_chunks(ds: SimDataset, first_streams: List[Any], batch: int, shards: np.ndarray,
                        sizes: np.ndarray, window: int):
    """Per shard of ``shards``: the downloaded bytes the first batches of ``first_streams``
    wait for, and the chunk-request rounds to get them.  The cache downloader's own chunk
    plan decides: with wanted chunks first (``download_ranges(wants=...)``) the chunks
    holding those records, fetched at once; otherwise the shard's prefix up to them."""
    from cloudrec.storage.cache_download import chunk_bounds, download_ranges
    prioritised = "wants" in inspect.signature(download_ranges).parameters
    t = ds.table
    lo = np.full(len(sizes), np.iinfo(np.int64).max)
    hi = np.zeros(len(sizes), np.int64)
    for s in first_streams:
        fb = s.ids[:batch]
        np.minimum.at(lo, t.shard[fb], t.offset[fb])
        np.maximum.at(hi, t.shard[fb], t.offset[fb] + t.length[fb])
    need = np.zeros(len(shards))
    rounds = np.zeros(len(shards))
    for k, sh in enumerate(shards.tolist()):
        if hi[sh] == 0:
            continue
        b = np.array(chunk_bounds(int(sizes[sh])), np.int64).reshape(-1, 2)
        i0 = int(np.searchsorted(b[:, 1], lo[sh], side="right"))
        i1 = int(np.searchsorted(b[:, 1], hi[sh] - 1, side="right"))
        if prioritised:
            need[k], rounds[k] = b[i1, 1] - b[i0, 0], 1
        else:
            need[k], rounds[k] = b[i1, 1], -(-(i1 + 1) // window)
    return need, rounds


def _order_sample(ds: SimDataset, job: JobSpec, full_below: int = 2_000_000,
                  chunks: int = 32, chunk: int = 32_768):
    """(positions, record ids) of the epoch's order: all of it for small datasets, else
    ``chunks`` evenly spaced runs from the lazy order plan (displacement is a mean)."""
    from cloudrec.reader import orders
    n = len(ds.table)
    plan_fn = getattr(orders, "order_plan", None)
    if n <= full_below or plan_fn is None:
        order = orders.epoch_order(ds.table, job.seed, job.epoch, job.mode, **job.order_options)
        return np.arange(n), order
    plan = plan_fn(ds.table, job.seed, job.epoch, job.mode, **job.order_options)
    starts = np.linspace(0, n - chunk, chunks).astype(np.int64)
    pos = np.concatenate([np.arange(a, a + chunk) for a in starts.tolist()])
    ids = np.concatenate([np.asarray(plan.take(a, a + chunk)) for a in starts.tolist()])
    return pos, ids


def simulate(ds: SimDataset, job: JobSpec, storage: StorageModel,
             host: Optional[HostModel] = None) -> Dict[str, Any]:
    """One epoch of ``job`` over ``ds`` on ``storage`` with the node's CPU ``host``
    (default: CPU costs nothing): counts, times, shuffle quality (a dict)."""
    host = host or HostModel()
    job.check()
    storage.check()
    host.check()
    t_all = time.perf_counter()
    fopts = {k: v for k, v in job.fetch.items() if k in _FETCH_KEYS}
    # an object store's defaults, as the front ends take them (FETCH_DEFAULTS); cache='none':
    # only its planning is used
    fetcher = RecordFetcher(ds, **{**FETCH_DEFAULTS["object"], **fopts})
    def fresh_sampler(rank: int) -> EpochSampler:
        return EpochSampler(ds.table, seed=job.seed, mode=job.mode, rank=rank,
                            world_size=job.world_size, batch_size=job.batch_size, last=job.last,
                            order_options=job.order_options, epoch=job.epoch)
    nodes = _sampled_nodes(job)
    ranks = [r for n in nodes for r in range(n * job.ranks_per_node,
                                             min(job.world_size, (n + 1) * job.ranks_per_node))]
    # what one worker process spends before its first request: a fresh sampler's slice
    t0 = time.perf_counter()
    shared = fresh_sampler(ranks[0])
    shared.epoch_slice(0, job.num_workers)
    worker_cpu_s = time.perf_counter() - t0

    def sampler_for(rank: int) -> EpochSampler:
        # the epoch's order plan is the same on every rank (a pure function of seed and
        # epoch): one sampler serves all ranks, its rank set before each slice
        shared.rank = rank
        return shared
    sts = list(streams(sampler_for, fetcher, num_workers=job.num_workers, ranks=ranks))
    t0 = time.perf_counter()
    pos, seen = _order_sample(ds, job)           # for displacement only
    order_s = time.perf_counter() - t0
    stream_rank = np.array([s.rank for s in sts], np.int64)
    stream_worker = np.array([s.worker for s in sts], np.int64)
    facts = timing.StreamFacts(stream_rank, stream_worker,
                               np.array([len(s.ids) for s in sts], np.int64),
                               np.array([-(-len(s.ids) // job.batch_size) for s in sts], np.int64))
    scale = job.world_size / len(ranks)          # 1.0 unless sampling
    nshards = len(ds.shards)
    sizes = np.array([s.size for s in ds.shards], np.int64)
    records_bytes = float(sum(int(ds.table.length[s.ids].sum()) for s in sts))

    cache = job.fetch.get("cache", "none")
    from cloudrec.storage.cache import DEFAULT_MAX_BYTES, download_ranges
    # the chunk the cache's own downloader uses (its default argument)
    DOWNLOAD_CHUNK = int(inspect.signature(download_ranges).parameters["chunk"].default)
    cap = int(job.fetch.get("cache_max_bytes") or DEFAULT_MAX_BYTES)
    if cache == "auto":
        cache = "shards" if int(sizes.sum()) <= cap else "none"
    if (cache == "none" and job.fetch.get("spool", True) and job.mode in SCATTERED_MODES
            and job.world_size == 1
            and fits_read_ahead(int(sizes.sum()), fetcher.readahead_bytes, job.num_workers)):
        cache = "shards"    # the workers share one download per shard (cloudrec.reader.spool)
    rank_idx = {r: i for i, r in enumerate(ranks)}
    node_list = sorted(set(r // job.ranks_per_node for r in ranks))
    node_idx = {n: i for i, n in enumerate(node_list)}
    rank_gets = np.zeros(len(ranks))
    rank_bytes = np.zeros(len(ranks))
    node_gets = np.zeros(len(node_list))
    node_bytes = np.zeros(len(node_list))
    node_disk = np.zeros(len(node_list))
    concurrency = fetcher.concurrency
    if cache == "none":
        req = _plan_in_chunks(ds.table, sts, fetcher.max_gap, fetcher.max_request,
                              fetcher.max_waste)
        srank = stream_rank[req.stream]
        ri = np.array([rank_idx[r] for r in ranks])[np.searchsorted(ranks, srank)]
        rank_gets = np.bincount(ri, minlength=len(ranks)).astype(float)
        rank_bytes = np.bincount(ri, weights=req.nbytes, minlength=len(ranks))
        for r, i in rank_idx.items():
            ni = node_idx[r // job.ranks_per_node]
            node_gets[ni] += rank_gets[i]
            node_bytes[ni] += rank_bytes[i]
        t = timing.ranged(req, facts, job, storage, host, concurrency, scale)
        overfull = False
    else:
        chunks = _download_gets(sizes, DOWNLOAD_CHUNK)
        per_node: Dict[int, set] = {}
        touched = np.zeros(len(node_list))      # (process, shard) pairs per node
        for s in sts:
            mine = np.unique(ds.table.shard[s.ids])
            ni = node_idx[s.rank // job.ranks_per_node]
            per_node.setdefault(ni, set()).update(mine.tolist())
            touched[ni] += len(mine)
        for ni, sh in per_node.items():
            idx = np.fromiter(sh, np.int64)
            node_gets[ni], node_bytes[ni] = chunks[idx].sum(), sizes[idx].sum()
            node_disk[ni] = node_bytes[ni]
        # a rank's processes pull each shard once per node: attribute evenly to its ranks
        per = job.ranks_per_node
        for r, i in rank_idx.items():
            ni = node_idx[r // per]
            rank_gets[i], rank_bytes[i] = node_gets[ni] / per, node_bytes[ni] / per
        from cloudrec.reader.cached import CacheHook
        from cloudrec.storage.cache_download import DOWNLOAD_WINDOW
        idx0 = np.fromiter(sorted(per_node.get(0, set())), np.int64)   # the first node's shards
        first_s = [s for s in sts if s.worker == 0 and node_idx[s.rank // job.ranks_per_node] == 0]
        need, rounds = _first_batch_chunks(ds, first_s, job.batch_size, idx0, sizes,
                                           DOWNLOAD_WINDOW)
        t = timing.cached(facts, node_bytes, node_gets, sizes[idx0], need, rounds, job, storage,
                          host, chunks[idx0], CacheHook.DOWNLOADERS, DOWNLOAD_WINDOW, scale,
                          touched - np.array([len(per_node.get(i, ())) for i in range(len(node_list))]))
        overfull = bool(node_disk.max() > cap)

    # opening the dataset: per rank (the DataLoader workers inherit it)
    idx_bytes = float(sum(ds.idx_sizes)) if ds.idx_sizes else 0.0
    # ranks that open at once and share a resource: the whole job on a loopback server,
    # else a node's ranks (their CPU)
    opening = job.world_size if storage.server_cpu else min(job.world_size, job.ranks_per_node)
    if job.table_file:
        from cloudrec.dataset.table_file import TABLE_GET_BYTES, table_nbytes
        tb = table_nbytes(len(ds.table), nshards)
        tgets = -(-tb // TABLE_GET_BYTES)
        lists = -(-2 * nshards // LIST_PAGE)
        open_s = timing.open_time(nshards, idx_bytes, storage, OPEN_CONCURRENCY, tb, tgets, lists,
                                  host, opening)
        open_gets = {"LIST per rank": lists, "GET table per node": tgets, "table bytes": tb}
    else:
        # the shards' sizes and versions: one listing of their folder (a HEAD for one shard)
        lists = -(-2 * nshards // LIST_PAGE) if nshards > 1 else 0
        open_s = timing.open_time(nshards, idx_bytes, storage, OPEN_CONCURRENCY, lists=lists,
                                  host=host, ranks=opening)
        open_gets = {"LIST per rank": lists, "HEAD per rank": 0 if lists else nshards,
                     "HEAD .idx per rank": 0, "GET .idx per rank": nshards,
                     ".idx bytes per rank": idx_bytes}
    cpu_s = worker_cpu_s
    q_streams = [s.ids for s in sts[:QUALITY_STREAMS]]
    total_gets = float(rank_gets.sum() * scale)
    total_bytes = float(node_bytes.sum() * scale)
    report = {
        "settings": settings(job, storage, host, {"cache_used": cache, "dataset": ds.name,
                                                  **{k: getattr(fetcher, k) for k in _FETCH_KEYS}}),
        "dataset": {"records": len(ds.table), "shards": nshards, "bytes": int(sizes.sum()),
                    "mean_record_bytes": float(ds.table.length.mean()) if len(ds.table) else 0.0},
        "exact": scale == 1.0,
        "simulated_ranks": len(ranks),
        "gets": total_gets, "bytes": total_bytes,
        "bytes_over_records": total_bytes / max(records_bytes * scale, 1.0),
        "bytes_over_dataset": total_bytes / max(float(sizes.sum()), 1.0),
        "per_rank": {"gets": _stats(rank_gets), "bytes": _stats(rank_bytes)},
        "per_node": {"gets": _stats(node_gets), "bytes": _stats(node_bytes),
                     "cache_disk_bytes": _stats(node_disk)},
        "cache_over_cap": overfull,
        "peak_get_rate_per_prefix": t["peak_get_rate"],
        "prefix_rate_limit": storage.prefix_rate,
        "open": {"seconds": open_s, **open_gets},
        "worker_cpu_s": worker_cpu_s, "full_order_cpu_s": order_s,
        "first_batch_s": open_s + cpu_s + host.worker_start_s + t["first_batch_s"],
        "epoch_s": open_s + cpu_s + host.worker_start_s + t["epoch_s"],
        "bound": t["bound"],
        "cpu_s": t.get("cpu_s", {}),
        "windows_short": t.get("windows_short", 0.0),
        "quality": quality(pos, seen, q_streams, ds.table, job.fractions, job.batch_size),
    }
    report["simulate_wall_s"] = time.perf_counter() - t_all
    return report


def _mb(x: float) -> str:
    return f"{x / 1e6:,.1f} MB" if x < 1e11 else f"{x / 1e9:,.1f} GB"


def format_report(r: Dict[str, Any]) -> str:
    """The report as an aligned text table."""
    j = r["settings"]["job"]
    q = r["quality"]
    d = r["dataset"]
    pr, pn = r["per_rank"], r["per_node"]
    rows = [
        ("dataset", f"{d['records']:,} records, {d['shards']:,} shards, {_mb(d['bytes'])}"),
        ("job", f"{j['world_size']} ranks x {j['num_workers']} workers, batch {j['batch_size']}, "
                f"mode {j['mode']}, cache {r['settings']['cache_used']}"),
        ("simulated", f"{r['simulated_ranks']} ranks" + ("" if r["exact"] else
                                                         " (per-node figures exact, totals scaled)")),
        ("GETs (epoch)", f"{r['gets']:,.0f}"),
        ("bytes (epoch)", f"{_mb(r['bytes'])} = {r['bytes_over_records']:.3f}x the records read"),
        ("GETs per rank", f"{pr['gets']['min']:,.0f} / {pr['gets']['mean']:,.0f} / "
                          f"{pr['gets']['max']:,.0f} (min/mean/max)"),
        ("bytes per rank", f"{_mb(pr['bytes']['min'])} / {_mb(pr['bytes']['mean'])} / "
                           f"{_mb(pr['bytes']['max'])}"),
        ("GETs per node", f"{pn['gets']['mean']:,.0f} (max {pn['gets']['max']:,.0f})"),
        ("bytes per node", f"{_mb(pn['bytes']['mean'])} (max {_mb(pn['bytes']['max'])})"),
        ("cache disk per node", _mb(pn["cache_disk_bytes"]["max"])
         + ("  OVER THE CAP: evictions re-download" if r["cache_over_cap"] else "")),
        ("peak GET/s per prefix", f"{r['peak_get_rate_per_prefix']:,.0f} "
                                  f"(limit {r['prefix_rate_limit']:,.0f})"),
        ("open dataset", f"{r['open']['seconds']:.2f} s"),
        ("order + slice CPU", f"{r['worker_cpu_s']:.3f} s per worker (measured here)"),
        ("time to first batch", f"{r['first_batch_s']:.2f} s"),
        ("epoch", f"{r['epoch_s']:,.1f} s, bound by {r['bound']}"),
        ("CPU charged", f"{r['cpu_s'].get('node_max', 0.0):,.1f} s on the busiest node"
                        + "".join(f", {k} {v:,.1f} s" for k, v in r["cpu_s"].items()
                                  if k != "node_max")),
        ("distinct 1/F per batch", f"{q['distinct_fractions']:.2f} of F={q['fractions']} "
                                   f"(uniform {q['distinct_fractions_uniform']:.2f})"),
        ("displacement", f"{q['displacement']:.3f} (uniform 0.333)"),
        ("simulation took", f"{r['simulate_wall_s']:.1f} s"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
