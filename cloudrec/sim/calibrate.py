"""Measure the cost model's parameters on this machine: CPU per request and per byte of
each server process and of the storage client, the workers' CPU per record and per
batch, and the cores left to us by everything else running (for ``bench/sim_validate.py``).

CPU seconds, unlike wall seconds, barely move with the machine's load, so costs are
measured as CPU time (``/proc/<pid>/stat`` for the servers, ``getrusage`` for this
process and its finished children); the cores free for the job are measured as what
the rest of the machine does not use (``/proc/stat`` minus our own processes).
"""
from __future__ import annotations

import json
import os
import resource
import time
from concurrent.futures import wait
from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

from cloudrec.sim.model import HostModel

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / _TICK


def self_cpu(children: bool = False) -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / _TICK


class CpuMeter:
    """CPU used by us (this process, its waited-for children, the given server pids) and
    by everything else, between ``start()`` and ``stop()``."""

    def __init__(self, pids: Dict[str, int]) -> None:
        self.pids = dict(pids)

    def _now(self) -> Dict[str, float]:
        out = {k: proc_cpu(p) for k, p in self.pids.items()}
        out.update(main=self_cpu(), children=self_cpu(True), machine=machine_busy(),
                   wall=time.perf_counter())
        return out

    def start(self) -> "CpuMeter":
        self._t0 = self._now()
        return self

    def stop(self) -> Dict[str, float]:
        t1 = self._now()
        d = {k: t1[k] - self._t0[k] for k in t1}
        ours = sum(v for k, v in d.items() if k not in ("machine", "wall"))
        d["others"] = max(0.0, d["machine"] - ours)
        d["cores_free"] = max(0.25, (os.cpu_count() or 1) - d["others"] / max(d["wall"], 1e-9))
        return d


def _ranged_cpu(reader: Any, path: str, ranges: Iterable[Tuple[int, int]], meter: CpuMeter
                ) -> Dict[str, float]:
    meter.start()
    futs = [reader.submit(path, a, b) for a, b in ranges]
    wait(futs)
    for f in futs:
        f.result()
    return meter.stop()


def storage_costs(ds: Any, pids: Dict[str, int], small: int = 300, small_bytes: int = 4096,
                  rounds: int = 2) -> Dict[str, Tuple[float, float]]:
    """CPU (s/request, s/byte) of each server process and of the client (key ``client``).

    Two loads through a RangeReader as the workers use (concurrency 16): many small
    GETs, then whole shards; two equations per component give its two costs.  Taken
    as the median of ``rounds``.
    """
    from cloudrec.storage.ranged import make_range_reader
    fs, path = ds.filesystem(0)
    size = ds.shards[0].size
    rng = np.random.default_rng(0)
    meter = CpuMeter(pids)
    est: Dict[str, List[Tuple[float, float]]] = {k: [] for k in [*pids, "client"]}
    reader = make_range_reader(fs, concurrency=16)
    try:
        for _ in range(rounds):
            starts = rng.integers(0, size - small_bytes, small).tolist()
            a = _ranged_cpu(reader, path, [(s, s + small_bytes) for s in starts], meter)
            big = [(0, size)] * 8
            b = _ranged_cpu(reader, path, big, meter)
            m = np.array([[small, small * small_bytes], [len(big), len(big) * size]], float)
            for k in est:
                col = "main" if k == "client" else k
                c_r, c_b = np.linalg.solve(m, [a[col], b[col]])
                est[k].append((max(0.0, c_r), max(0.0, c_b)))
    finally:
        reader.close()
    return {k: (float(np.median([x[0] for x in v])), float(np.median([x[1] for x in v])))
            for k, v in est.items()}


def worker_costs(local_urls: List[str], batch: int, workers: int = 1) -> Dict[str, float]:
    """CPU per record and per batch of RecordIterableDataset under a DataLoader with
    ``workers`` workers, reading a local copy of the shards (decode=len, as the
    validation does), and the wall time from ``iter()`` to the first batch of a local
    epoch (worker start-up: fork, first window)."""
    import torch.utils.data as tud

    from cloudrec.dataset import open_dataset
    from cloudrec.torch import RecordIterableDataset
    ds = open_dataset(local_urls)
    rds = RecordIterableDataset(ds, decode=len, batch_size=batch, seed=0, mode="block")
    n = len(ds)
    nb = -(-n // batch)
    out: Dict[str, List[float]] = {"worker_record_s": [], "main_batch_s": [], "start_s": []}
    for _ in range(2):
        loader = tud.DataLoader(rds, batch_size=None, num_workers=workers,
                                multiprocessing_context="fork")
        c_main, c_ch = self_cpu(), self_cpu(True)
        t0 = time.perf_counter()
        first = None
        for _b in loader:
            if first is None:
                first = time.perf_counter() - t0
        del loader
        out["worker_record_s"].append((self_cpu(True) - c_ch) / n)
        out["main_batch_s"].append((self_cpu() - c_main) / nb)
        out["start_s"].append(first or 0.0)
    return {k: float(np.median(v)) for k, v in out.items()}


def client_setup(ds: Any, rounds: int = 3) -> Tuple[float, float]:
    """(wall s, CPU s) a forked worker's first request costs more than its next ones: the
    storage client it creates (RecordFetcher after fork)."""
    from cloudrec.reader.fetch import RecordFetcher
    f = RecordFetcher(ds)
    f.get(0)
    walls, cpus = [], []
    for _ in range(rounds):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                out = []
                for rid in (0, 1):
                    c0, t0 = self_cpu(), time.perf_counter()
                    f.get(rid)
                    out += [time.perf_counter() - t0, self_cpu() - c0]
                os.write(w, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as fh:
            vals = json.loads(fh.read() or "[0, 0, 0, 0]")
        os.waitpid(pid, 0)
        walls.append(vals[0] - vals[2])
        cpus.append(vals[1] - vals[3])
    f.close()
    return float(max(0.0, np.median(walls))), float(max(0.0, np.median(cpus)))


def open_cpu(urls: List[str], storage_options: Dict[str, Any], request_cpu_s: float,
             rounds: int = 3) -> float:
    """CPU of ``open_dataset`` beyond its requests' client CPU (3 per shard)."""
    from cloudrec.dataset import open_dataset
    out = []
    for _ in range(rounds):
        c0 = self_cpu()
        open_dataset(list(urls), storage_options=storage_options)
        out.append(self_cpu() - c0 - 3 * len(urls) * request_cpu_s)
    return float(max(0.0, np.median(out)))


def cache_cpu(ds: Any, request_cpu_s: float, byte_cpu_s: float, record_cpu_s: float) -> float:
    """CPU per byte a cold shard cache adds to a worker (download into the folder, CRC,
    streaming from the partial file, local reads): one fetcher reads every record in
    shard order through ``cache='shards'`` into an empty folder; what its requests'
    client CPU and its records' CPU do not explain, per downloaded byte."""
    import tempfile

    from cloudrec.reader.fetch import RecordFetcher
    from cloudrec.storage.cache_download import chunk_bounds
    with tempfile.TemporaryDirectory() as d:
        with RecordFetcher(ds, cache="shards", cache_dir=d) as f:
            c0 = self_cpu()
            n = sum(1 for _ in f.fetch(np.arange(len(ds))))
            used = self_cpu() - c0
    gets = sum(len(chunk_bounds(int(s.size))) for s in ds.shards)
    rest = used - gets * request_cpu_s - ds.nbytes * byte_cpu_s - n * record_cpu_s
    return max(0.0, rest / ds.nbytes)


def crc_cpu(size: int = 32 << 20) -> float:
    """CPU per byte of the cache's CRC32 check of an entry (``crc32_file``)."""
    import tempfile

    from cloudrec.storage.cache_files import crc32_file
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x")
        with open(path, "wb") as fh:
            fh.write(os.urandom(size))
        crc32_file(path)
        c0 = self_cpu()
        crc32_file(path)
        return (self_cpu() - c0) / size


def follow_cpu(ds: Any, setup_cpu_s: float, procs: int = 4, rounds: int = 2
               ) -> Dict[str, float]:
    """CPU a process spends on a shard another process of the node downloads (waiting on
    its lock, following its progress file, streaming from its temp file, opening the
    entry), per (process, shard) pair.

    ``procs`` forked processes each read every ``procs``-th record through one cache
    folder (each needs every shard; one downloads it), against one process reading
    them all.  The extra processes' client set-up is taken off, and so is their CRC32
    re-check of every entry a sibling has just downloaded and checked (reported
    apart, as ``recheck_crc_cpu_s``: a cost of the current cache, not of the design).
    """
    import tempfile

    from cloudrec.reader.fetch import RecordFetcher

    def run(p: int) -> float:
        with tempfile.TemporaryDirectory() as d:
            c0 = self_cpu(True)
            kids = []
            for k in range(p):
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child
                    try:
                        with RecordFetcher(ds, cache="shards", cache_dir=d) as f:
                            for _ in f.fetch(np.arange(len(ds))[k::p]):
                                pass
                    finally:
                        os._exit(0)
                kids.append(pid)
            for pid in kids:
                os.waitpid(pid, 0)
            return self_cpu(True) - c0
    extra = []
    for _ in range(rounds):
        extra.append(run(procs) - run(1) - (procs - 1) * setup_cpu_s)
    pairs = (procs - 1) * len(ds.shards)
    recheck = (procs - 1) * ds.nbytes * crc_cpu()
    return {"follow_pair_cpu_s": max(0.0, (float(np.median(extra)) - recheck) / pairs),
            "recheck_crc_cpu_s": recheck, "extra_cpu_s": float(np.median(extra))}


def host_model(costs: Dict[str, Tuple[float, float]], wk: Dict[str, float], cores: float,
               setup: Tuple[float, float] = (0.0, 0.0), open_cpu_s: float = 0.0,
               cache_byte_cpu_s: float = 0.0, follow_cpu_s: float = 0.0) -> HostModel:
    """The node's cost model from the measurements above (the server processes' costs
    go to ``StorageModel.server_cpu``).  A worker starts in the local epoch's time to
    its first batch plus its storage client's set-up (``setup``: wall, CPU)."""
    c_r, c_b = costs["client"]
    return HostModel(cores=cores, request_cpu_s=c_r, byte_cpu_s=c_b,
                     record_cpu_s=wk["worker_record_s"], main_batch_cpu_s=wk["main_batch_s"],
                     cache_byte_cpu_s=cache_byte_cpu_s, cache_follow_cpu_s=follow_cpu_s,
                     worker_start_s=wk["start_s"] + setup[0], worker_start_cpu_s=setup[1],
                     open_cpu_s=open_cpu_s)
