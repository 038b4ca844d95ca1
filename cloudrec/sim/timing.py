"""Modelled time of an epoch's requests: the only part of the simulator that is a model.

Ranged reads (no cache): each request costs ``latency + bytes / stream_bw``;
a worker process runs its requests in submission order on ``concurrency``
connections, as a fluid queue (request i starts when the worker's earlier
requests have used ``sum(t) / concurrency`` of time).  A node cannot move more
than ``node_bw``: its workers' times stretch together when their bytes need
longer; a prefix cannot serve more than ``prefix_rate`` GET/s, which bounds the
whole job.  The fetcher's read-ahead cap is taken as never idling a connection
(true when a window holds at least ``concurrency`` requests; ``windows_short``
reports the share of windows that do not).

Shard cache: a node downloads each shard it touches once, in ``chunk`` ranged
GETs spread over all its processes' connections; records are then local.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from cloudrec.sim.model import JobSpec, StorageModel
from cloudrec.sim.trace import Requests

BUCKET_S = 1.0  # request-rate histogram resolution


def _seg_max(values: np.ndarray, seg: np.ndarray, nseg: int) -> np.ndarray:
    """Max of ``values`` per segment label (labels sorted, as requests are by stream)."""
    out = np.zeros(nseg)
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    out[seg[starts]] = np.maximum.reduceat(values, starts)
    return out


def ranged(req: Requests, stream_rank: np.ndarray, stream_worker: np.ndarray, job: JobSpec,
           storage: StorageModel, concurrency: int, rank_scale: float) -> Dict[str, Any]:
    """Time to first batch (after open) and storage-bound epoch time of ranged reads."""
    nstreams = len(stream_rank)
    if len(req) == 0:
        return {"first_batch_s": 0.0, "epoch_s": 0.0, "peak_get_rate": 0.0, "windows_short": 0.0,
                "bound": "none"}
    t = storage.latency_s + req.nbytes / storage.stream_bw
    s = req.stream.astype(np.int64)
    csum = np.cumsum(t)
    first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    base = np.zeros(nstreams)
    base[s[first]] = csum[first] - t[first]
    start = (csum - t - base[s]) / concurrency            # fluid: C connections per worker
    finish = start + t
    done = _seg_max(finish, s, nstreams)
    # a node's bytes at node_bw: its workers stretch together
    node_of_stream = stream_rank // job.ranks_per_node
    nodes = int(node_of_stream.max()) + 1
    node_bytes = np.bincount(node_of_stream[s], weights=req.nbytes, minlength=nodes)
    node_done = np.zeros(nodes)
    np.maximum.at(node_done, node_of_stream, done)
    stretch = np.maximum(1.0, (node_bytes / storage.node_bw) / np.maximum(node_done, 1e-12))
    start = start * stretch[node_of_stream[s]]
    finish = finish * stretch[node_of_stream[s]]
    # the prefix limit over the whole job (sampled ranks stand for rank_scale times as many)
    prefix = req.shard.astype(np.int64) % storage.prefixes
    per_prefix = np.bincount(prefix, minlength=storage.prefixes) * rank_scale
    demand_end = float(finish.max())
    buckets = (start / BUCKET_S).astype(np.int64)
    peak = float(np.bincount(buckets * storage.prefixes + prefix).max()) * rank_scale / BUCKET_S
    prefix_bound = float(per_prefix.max() / storage.prefix_rate)
    epoch = max(demand_end, prefix_bound)
    bound = "prefix request rate" if prefix_bound > demand_end else (
        "node bandwidth" if stretch.max() > 1.0 else "latency x requests per worker")
    slow = epoch / demand_end if demand_end > 0 else 1.0
    # first batch: worker 0 of each rank, records before position B
    w0 = (stream_worker[s] == 0) & (req.need < job.batch_size)
    fb = np.zeros(nstreams)
    np.maximum.at(fb, s[w0], finish[w0])
    fb_rank = fb[stream_worker == 0]
    # windows with fewer requests than connections may leave some idle (see module doc)
    wstart = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (req.window[1:] != req.window[:-1])])
    per_window = np.diff(np.append(wstart, len(s)))
    return {"first_batch_s": float(fb_rank.max() * slow), "epoch_s": epoch,
            "peak_get_rate": peak, "windows_short": float(np.mean(per_window < concurrency)),
            "bound": bound, "node_stretch": float(stretch.max())}


def cached(node_bytes: np.ndarray, node_gets: np.ndarray, first_bytes: float, first_shard: int,
           job: JobSpec, storage: StorageModel, concurrency: int, chunk: int,
           downloaders: int) -> Dict[str, Any]:
    """Shard-cache downloads: each node fetches its shards in ``chunk`` GETs on all connections."""
    per_get = storage.latency_s + chunk / storage.stream_bw
    procs = job.ranks_per_node * job.num_workers
    node_rate = min(storage.node_bw, procs * concurrency * chunk / per_get)
    node_time = node_bytes / node_rate
    total_gets = float(node_gets.sum())
    prefix_bound = total_gets / storage.prefixes / storage.prefix_rate
    demand_end = float(node_time.max()) if node_time.size else 0.0
    epoch = max(demand_end, prefix_bound)
    peak = total_gets / storage.prefixes / max(demand_end, 1e-9)
    # the first batch streams from the shards it touches as they download (first chunk
    # 1 MB); one process pulls them
    proc_rate = min(storage.node_bw / procs * job.num_workers, concurrency * chunk / per_get)
    first = storage.latency_s + min(first_bytes, first_shard) / proc_rate
    bound = "prefix request rate" if prefix_bound > demand_end else (
        "node bandwidth" if node_rate == storage.node_bw else "latency x downloads")
    return {"first_batch_s": first, "epoch_s": epoch, "peak_get_rate": peak, "bound": bound}


def open_time(shards: int, idx_bytes: float, storage: StorageModel, concurrency: int = 16,
              table_bytes: float = 0.0, table_gets: int = 0, lists: int = 0) -> float:
    """``open_dataset``: one HEAD per shard, then every `.idx`, ``concurrency`` at a time;
    with a dataset table: its GETs (concurrent) and the listing pages that check it."""
    rate = min(storage.node_bw, concurrency * storage.stream_bw)
    if table_gets:
        return (lists * storage.latency_s + storage.latency_s * -(-table_gets // concurrency)
                + table_bytes / rate)
    rounds = -(-shards // concurrency)
    return 2 * rounds * storage.latency_s + idx_bytes / rate
