"""Modelled time of an epoch's requests: the only part of the simulator that is a model.

Every request costs time on two kinds of resource:

* its own delay while it holds one of the worker's ``concurrency`` connections:
  ``latency + bytes / stream_bw`` plus the CPU its client and servers spend on
  it, in series (:func:`own_time`).  A worker runs its requests in
  submission order as a fluid queue (request i starts once the worker's earlier
  requests have used ``sum(t) / concurrency``): the latency bound per worker;
* shared capacity of the node: its bandwidth (``node_bw``), its cores
  (``HostModel.cores``: the storage client's CPU per request and per byte, the
  workers' CPU per record, the main processes' per batch, and on a loopback
  server the server processes' CPU, ``StorageModel.server_cpu``), each
  single-threaded process (a worker, a server process) at most one core, and
  the job's request rate per prefix.

A node's streaming time is the largest of these bounds (its workers' queues
stretch together when a shared resource needs longer).  The first batch waits
for its requests' waves: each wave of ``concurrency`` requests pays one latency,
and while they run they share each resource they use with every request of the
same or an earlier wave (processor sharing: a request of work ``u`` among
requests of work ``u_j`` finishes after ``sum(min(u_j, u))``); then its records'
CPU and the hand-off to the rank.

Shard cache: a node downloads each shard it touches once (the downloader's
chunks, ``downloaders`` shards at a time per process); records are then local
and cost their record CPU; the first batch streams from the partial download.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from cloudrec.sim.model import HostModel, JobSpec, StorageModel
from cloudrec.sim.trace import Requests

BUCKET_S = 1.0  # request-rate histogram resolution


@dataclass
class StreamFacts:
    """Per (rank, worker) stream: who it is and how much it reads (parallel arrays)."""

    rank: np.ndarray
    worker: np.ndarray
    records: np.ndarray
    batches: np.ndarray


def _seg_max(values: np.ndarray, seg: np.ndarray, nseg: int) -> np.ndarray:
    """Max of ``values`` per segment label (labels sorted, as requests are by stream)."""
    out = np.zeros(nseg)
    if values.size:
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        out[seg[starts]] = np.maximum.reduceat(values, starts)
    return out


def _server_seconds(storage: StorageModel, gets: float, nbytes: float) -> Dict[str, float]:
    """CPU seconds each single-threaded loopback server process spends on the job."""
    return {k: gets * c_r + nbytes * c_b for k, (c_r, c_b) in storage.server_cpu.items()}


def _shared_bounds(node_cpu: np.ndarray, node_bytes: np.ndarray, server_s: Dict[str, float],
                   storage: StorageModel, host: HostModel) -> Tuple[np.ndarray, np.ndarray]:
    """Per node: seconds its shared resources need, and which one binds (index into
    ``['node bandwidth', 'node CPU', <server processes>]``)."""
    cpu = node_cpu.copy()
    if server_s:
        cpu[0] += sum(server_s.values())      # a loopback server runs on the first node
    cols = [node_bytes / storage.node_bw, cpu / host.cores if host.cores > 0 else 0 * cpu]
    for v in server_s.values():
        col = np.zeros(len(cpu))
        col[0] = v
        cols.append(col)
    m = np.vstack(cols)
    return m.max(axis=0), m.argmax(axis=0)


def _bound_name(which: int, server_s: Dict[str, float]) -> str:
    names = ["node bandwidth", "node CPU"] + [f"server process {k} (1 core)" for k in server_s]
    return names[which]


def own_time(nbytes: np.ndarray, storage: StorageModel, host: HostModel) -> np.ndarray:
    """A request's time on its connection when nothing else contends: the latency, its
    bytes at the connection's bandwidth (or, if slower, through the CPU of its servers
    and client per byte) and the CPU each of them spends on one request, in series."""
    per_byte = host.byte_cpu_s + sum(c_b for _, c_b in storage.server_cpu.values())
    per_req = host.request_cpu_s + sum(c_r for c_r, _ in storage.server_cpu.values())
    t = nbytes * max(1 / storage.stream_bw, per_byte)
    t += storage.latency_s + per_req
    return t


def _resources(storage: StorageModel, host: HostModel):
    """(seconds per request, per byte, capacity) of each resource a request shares."""
    out = [(0.0, 1.0, storage.node_bw)]
    srv_r = sum(c_r for c_r, _ in storage.server_cpu.values())
    srv_b = sum(c_b for _, c_b in storage.server_cpu.values())
    if host.cores > 0:
        out.append((host.request_cpu_s + srv_r, host.byte_cpu_s + srv_b, host.cores))
    out += [(c_r, c_b, 1.0) for c_r, c_b in storage.server_cpu.values()]
    return out


def _ps_finish(u: np.ndarray, group: np.ndarray, wave: np.ndarray, q: np.ndarray) -> np.ndarray:
    """For each query request ``q``: sum over requests of its group (node) and of the
    same or an earlier wave of ``min(u_j, u_q)`` (processor sharing, see module doc)."""
    out = np.zeros(len(q))
    if not len(q):
        return out
    # only requests of the queries' waves or earlier take part: a few per stream
    sub = np.flatnonzero(wave <= wave[q].max())
    remap = np.full(len(u), -1, np.int64)
    remap[sub] = np.arange(len(sub))
    u, group, wave, q = u[sub], group[sub], wave[sub], remap[q]
    for g in np.unique(group[q]).tolist():
        in_g = group == g
        for w in np.unique(wave[q][group[q] == g]).tolist():
            cand = np.sort(u[in_g & (wave <= w)])
            csum = np.concatenate([[0.0], np.cumsum(cand)])
            sel = np.flatnonzero((group[q] == g) & (wave[q] == w))
            x = u[q[sel]]
            k = np.searchsorted(cand, x, side="left")
            out[sel] = csum[k] + x * (len(cand) - k)
    return out


def ranged(req: Requests, st: StreamFacts, job: JobSpec, storage: StorageModel,
           host: HostModel, concurrency: int, rank_scale: float) -> Dict[str, Any]:
    """Time to first batch (after the workers start) and epoch time of ranged reads."""
    nstreams = len(st.rank)
    if len(req) == 0:
        return {"first_batch_s": 0.0, "epoch_s": 0.0, "peak_get_rate": 0.0, "windows_short": 0.0,
                "bound": "none", "node_stretch": 1.0}
    nb = req.nbytes.astype(float)
    t = own_time(nb, storage, host)
    s = req.stream.astype(np.int64)
    csum = np.cumsum(t)
    first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    base = np.zeros(nstreams)
    base[s[first]] = csum[first] - t[first]
    start = csum                                          # fluid: C connections per worker
    start -= t
    start -= base[s]
    start /= concurrency
    finish = start + t
    done = _seg_max(finish, s, nstreams)                  # latency bound per worker
    # CPU: the storage client's per request and byte, in the worker that asked
    per_stream_gets = np.bincount(s, minlength=nstreams)
    per_stream_bytes = np.bincount(s, weights=nb, minlength=nstreams)
    w_cpu = (per_stream_gets * host.request_cpu_s + per_stream_bytes * host.byte_cpu_s
             + st.records * host.record_cpu_s + host.worker_start_cpu_s)
    nodes_of, node_of_stream = np.unique(st.rank // job.ranks_per_node, return_inverse=True)
    nnodes = len(nodes_of)
    node_bytes = np.bincount(node_of_stream, weights=per_stream_bytes, minlength=nnodes)
    node_cpu = (np.bincount(node_of_stream, weights=w_cpu, minlength=nnodes)
                + np.bincount(node_of_stream, weights=st.batches, minlength=nnodes)
                * host.main_batch_cpu_s)
    server_s = _server_seconds(storage, len(req) * rank_scale, float(nb.sum()) * rank_scale)
    shared, which = _shared_bounds(node_cpu, node_bytes, server_s, storage, host)
    work = np.maximum(done, w_cpu)                        # a worker: one core
    node_lat = np.zeros(nnodes)
    np.maximum.at(node_lat, node_of_stream, done)
    node_work = np.zeros(nnodes)
    np.maximum.at(node_work, node_of_stream, work)
    node_t = np.maximum(shared, node_work)
    stretch = np.maximum(1.0, node_t / np.maximum(node_lat, 1e-12))
    # the prefix limit over the whole job (sampled ranks stand for rank_scale times as many)
    buckets = start
    buckets *= (stretch / BUCKET_S)[node_of_stream][s]     # start is not needed after this
    buckets = buckets.astype(np.int64)
    if storage.prefixes > 1:
        prefix = req.shard.astype(np.int64) % storage.prefixes
        buckets = buckets * storage.prefixes + prefix
        per_prefix = np.bincount(prefix, minlength=storage.prefixes) * rank_scale
    else:
        per_prefix = np.array([len(req)], float) * rank_scale
    demand_end = float(node_t.max())
    peak = float(np.bincount(buckets).max()) * rank_scale / BUCKET_S
    del buckets
    prefix_bound = float(per_prefix.max() / storage.prefix_rate)
    epoch = max(demand_end, prefix_bound)
    slow = epoch / demand_end if demand_end > 0 else 1.0
    worst = int(np.argmax(node_t))
    if prefix_bound > demand_end:
        bound = "prefix request rate"
    elif node_t[worst] <= node_lat[worst] * (1 + 1e-9):
        bound = "latency x requests per worker"
    elif node_t[worst] > shared[worst]:
        bound = "one worker's CPU (1 core)"
    else:
        bound = _bound_name(int(which[worst]), server_s)
    # first batch: worker 0 of each rank, records before position B
    q = np.flatnonzero((st.worker[s] == 0) & (req.need < job.batch_size))
    first_of = np.zeros(nstreams, np.int64)
    first_of[s[first]] = first
    wave = np.arange(len(s), dtype=np.int64)
    wave -= first_of[s]                                   # position in its stream
    wave //= max(1, concurrency)
    # while the first waves run they share each resource they use (the node's bandwidth,
    # its cores, each server process's one core) with every request of those waves
    sub = np.flatnonzero(wave <= wave[q].max())
    node_req = node_of_stream[s[sub]]
    qs = np.searchsorted(sub, q)
    share = np.zeros(len(q))
    for per_req, per_byte, cap in _resources(storage, host):
        u = (per_req + nb[sub] * per_byte) / cap
        share = np.maximum(share, _ps_finish(u, node_req, wave[sub], qs))
    # ... then the worker turns the batch's records into a batch, the rank receives it
    ps = ((wave[q] + 1) * storage.latency_s + share
          + job.batch_size * host.record_cpu_s + host.main_batch_cpu_s)
    fb = np.zeros(nstreams)
    np.maximum.at(fb, s[q], np.maximum(finish[q], ps))
    fb_rank = fb[st.worker == 0]
    wstart = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (req.window[1:] != req.window[:-1])])
    per_window = np.diff(np.append(wstart, len(s)))
    return {"first_batch_s": float(fb_rank.max() * slow), "epoch_s": epoch,
            "peak_get_rate": peak, "windows_short": float(np.mean(per_window < concurrency)),
            "bound": bound, "node_stretch": float(stretch.max()),
            "cpu_s": _cpu_report(node_cpu, server_s)}


def cached(st: StreamFacts, node_bytes: np.ndarray, node_gets: np.ndarray, shard_sizes: np.ndarray,
           first_need: np.ndarray, first_rounds: np.ndarray, job: JobSpec,
           storage: StorageModel, host: HostModel,
           chunk_gets: np.ndarray, downloaders: int, window: int, rank_scale: float,
           followers: np.ndarray) -> Dict[str, Any]:
    """Shard-cache downloads, then local reads (see module doc).

    ``node_bytes``/``node_gets``: what each node downloads; ``shard_sizes``: the
    sizes of the shards one node downloads (the first); ``first_need`` and
    ``first_rounds``: per shard of that list, the downloaded bytes the first batch
    waits for (0 = none) and the chunk-request rounds to get them;
    ``chunk_gets``: GETs per shard of that list; ``followers``: per node, the
    (process, shard) pairs where another process downloads the shard.
    """
    nodes_of, node_of_stream = np.unique(st.rank // job.ranks_per_node, return_inverse=True)
    nnodes = len(nodes_of)
    procs = max(1, int(np.bincount(node_of_stream).max()))
    # latency bound: downloads run ``downloaders`` per process, each with ``window`` chunk
    # GETs in flight; a shard takes at least its own chunk rounds
    sizes = shard_sizes.astype(float)
    shard_lat = (np.ceil(chunk_gets / window) * storage.latency_s
                 + sizes / (storage.stream_bw * np.minimum(chunk_gets, window)))
    slots = procs * downloaders
    lat_bound = max(float(shard_lat.max()) if shard_lat.size else 0.0,
                    float(shard_lat.sum()) / slots)
    cli = (node_gets * host.request_cpu_s + node_bytes * (host.byte_cpu_s + host.cache_byte_cpu_s)
           + followers * host.cache_follow_cpu_s)
    rec_cpu = np.bincount(node_of_stream, weights=st.records * host.record_cpu_s
                          + host.worker_start_cpu_s, minlength=nnodes)
    main_cpu = np.bincount(node_of_stream, weights=st.batches, minlength=nnodes) * host.main_batch_cpu_s
    node_cpu = cli + rec_cpu + main_cpu
    server_s = _server_seconds(storage, float(node_gets.sum()) * rank_scale,
                               float(node_bytes.sum()) * rank_scale)
    shared, which = _shared_bounds(node_cpu, node_bytes, server_s, storage, host)
    # one worker's own core: its records plus its share of the node's downloads
    w_cpu = st.records * host.record_cpu_s + host.worker_start_cpu_s + (cli / procs)[node_of_stream]
    node_work = np.zeros(nnodes)
    np.maximum.at(node_work, node_of_stream, w_cpu)
    node_t = np.maximum(np.maximum(shared, node_work), lat_bound)
    total_gets = float(node_gets.sum()) * rank_scale
    prefix_bound = total_gets / storage.prefixes / storage.prefix_rate
    demand_end = float(node_t.max()) if node_t.size else 0.0
    epoch = max(demand_end, prefix_bound)
    peak = total_gets / storage.prefixes / max(demand_end, 1e-9)
    worst = int(np.argmax(node_t)) if node_t.size else 0
    if prefix_bound > demand_end:
        bound = "prefix request rate"
    elif node_t[worst] <= lat_bound * (1 + 1e-9):
        bound = "latency x downloads"
    elif node_t[worst] > shared[worst]:
        bound = "one worker's CPU (1 core)"
    else:
        bound = _bound_name(int(which[worst]), server_s)
    # first batch: the shards it reads download side by side with all the node's others
    # (processor sharing: all progress alike over the download phase, which takes what
    # the downloads and the workers' start-up need of the shared resources); it waits
    # for the bytes it needs of each, one latency per chunk round to get them, then for
    # its records' CPU
    need = first_need.astype(float)
    first = 0.0
    rounds = first_rounds
    dl_cpu = cli + np.bincount(node_of_stream, minlength=nnodes) * host.worker_start_cpu_s
    dl_t = max(float(_shared_bounds(dl_cpu, node_bytes, server_s, storage, host)[0][0]), lat_bound)
    if need.any() and sizes.sum() > 0:
        for k in np.flatnonzero(need).tolist():
            ps = float(np.minimum(sizes, need[k]).sum()) / float(sizes.sum()) * dl_t
            lat = rounds[k] * storage.latency_s + need[k] / storage.stream_bw
            first = max(first, ps + rounds[k] * storage.latency_s, lat)
        first += job.batch_size * host.record_cpu_s + host.main_batch_cpu_s
    return {"first_batch_s": first, "epoch_s": epoch, "peak_get_rate": peak, "bound": bound,
            "cpu_s": _cpu_report(node_cpu, server_s)}


def _cpu_report(node_cpu: np.ndarray, server_s: Dict[str, float]) -> Dict[str, float]:
    """CPU seconds the model charges: the busiest node's own processes, each server process."""
    return {"node_max": float(node_cpu.max()) if node_cpu.size else 0.0, **server_s}


def open_time(shards: int, idx_bytes: float, storage: StorageModel, concurrency: int = 16,
              table_bytes: float = 0.0, table_gets: int = 0, lists: int = 0,
              host: HostModel = HostModel(), ranks: int = 1) -> float:
    """``open_dataset`` of one rank: every `.idx` (one GET each, ``concurrency`` at a
    time) while ``lists`` listing pages give the shards' sizes (no listing: one HEAD
    per shard, in the same round); with a dataset table: its GETs (concurrent) and
    the listing pages that check it.  ``ranks`` opening at once share a loopback server
    and the node's cores (their requests' CPU), plus ``open_cpu_s`` each."""
    rate = min(storage.node_bw, concurrency * storage.stream_bw)
    if table_gets:
        gets = lists + table_gets
        lat = (lists * storage.latency_s + storage.latency_s * -(-table_gets // concurrency)
               + table_bytes / rate)
        nbytes = table_bytes
    elif lists:  # the pages one after another, beside the .idx GETs
        gets = lists + shards
        lat = max(lists * storage.latency_s,
                  -(-shards // concurrency) * storage.latency_s + idx_bytes / rate)
        nbytes = idx_bytes
    else:
        gets = 2 * shards  # both at once: one round of requests
        lat = -(-2 * shards // concurrency) * storage.latency_s + idx_bytes / rate
        nbytes = idx_bytes
    server_s = _server_seconds(storage, gets * ranks, nbytes * ranks)
    cpu = ranks * (gets * host.request_cpu_s + nbytes * host.byte_cpu_s) + sum(server_s.values())
    bounds = [lat, max(server_s.values(), default=0.0)]
    if host.cores > 0:
        bounds.append(cpu / host.cores)
    return max(bounds) + host.open_cpu_s
