"""Where a real validation epoch's time goes (instrumentation for cloudrec.sim's model).

    python bench/sim_probe.py [--job "block 2 2"] [--cache shards] [--latency-ms 20]

Runs one job of bench/sim_validate.py for real with every process logging
timestamps (CLOCK_MONOTONIC, comparable across processes) to a JSONL file:
rank open, DataLoader worker start, fetcher creation, every GET's submit and
completion, every record handed to decode, every batch collated (worker) and
received (main).  Prints a timeline summary.  Not a benchmark: the wrappers
cost a little; it answers "what does the model miss".
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict

for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)

LOG = {"path": None}
_lock = threading.Lock()


def log(kind: str, **kw) -> None:
    kw.update(k=kind, t=time.perf_counter(), pid=os.getpid(), th=threading.get_ident() % 10000)
    line = json.dumps(kw) + "\n"
    with _lock:
        with open(LOG["path"], "a") as f:
            f.write(line)


def instrument() -> None:
    from cloudrec.reader import fetch as fetch_mod
    from cloudrec.reader import cached
    from cloudrec.storage import ranged
    orig_submit = fetch_mod.RecordFetcher._submit
    orig_init = fetch_mod.RecordFetcher.__init__
    orig_fetch = fetch_mod.RecordFetcher.fetch
    orig_areader = ranged.AsyncRangeReader.submit
    orig_dl = cached.CacheHook._download

    def submit(self, shard_no, start, end):
        t0 = time.perf_counter()
        f = orig_submit(self, shard_no, start, end)
        log("sub", shard=shard_no, a=start, n=end - start, dt=time.perf_counter() - t0)
        f.add_done_callback(lambda _f: log("req_done", shard=shard_no, a=start, n=end - start))
        return f

    def areader(self, path, start, end, url=None, version=None):
        t0 = time.perf_counter()
        f = orig_areader(self, path, start, end, url, version)
        f.add_done_callback(lambda _f: log("get", n=end - start, t0=t0))
        return f

    def init(self, *a, **kw):
        t0 = time.perf_counter()
        orig_init(self, *a, **kw)
        log("fetcher_init", t0=t0)

    def fetch(self, ids, *a, **kw):
        log("fetch_call")
        t0 = time.perf_counter()
        self._check_pid()
        log("check_pid", dt=time.perf_counter() - t0)
        return orig_fetch(self, ids, *a, **kw)

    def dl(self, shard_no, prog):
        t0 = time.perf_counter()
        try:
            return orig_dl(self, shard_no, prog)
        finally:
            log("download", shard=shard_no, t0=t0)

    from cloudrec.storage import cache as cache_mod
    orig_crc = cache_mod.crc32_file

    def crc(path):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return orig_crc(path)
        finally:
            log("crc", t0=t0, cpu=time.thread_time() - c0, n=os.path.getsize(path))
    cache_mod.crc32_file = crc
    fetch_mod.RecordFetcher._submit = submit
    fetch_mod.RecordFetcher.__init__ = init
    fetch_mod.RecordFetcher.fetch = fetch
    ranged.AsyncRangeReader.submit = areader
    cached.CacheHook._download = dl


class ThreadSampler:
    """Samples the CPU of every thread of our DataLoader workers (children) by name."""

    def __init__(self):
        self.last = {}
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _children(self):
        out = set()
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            try:
                with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
                    out.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return out

    def _run(self):
        while not self.stop.is_set():
            for pid in self._children():
                try:
                    tids = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                for tid in tids:
                    try:
                        with open(f"/proc/{pid}/task/{tid}/stat") as f:
                            raw = f.read()
                    except OSError:
                        continue
                    name = raw[raw.index("(") + 1:raw.rindex(")")]
                    parts = raw.rsplit(")", 1)[1].split()
                    self.last[(pid, tid)] = (name, (int(parts[11]) + int(parts[12])) / 100)
            self.stop.wait(0.02)

    def report(self):
        self.stop.set()
        self.t.join()
        by = defaultdict(float)
        for (pid, _), (name, cpu) in self.last.items():
            if pid in (MOTO_PROXY_PIDS):
                continue
            by[name] += cpu
        return dict(sorted(by.items(), key=lambda x: -x[1]))


MOTO_PROXY_PIDS: set = set()


def run(urls, job, so, cache_dir):
    import torch.utils.data as tud

    from cloudrec.dataset import open_dataset
    from cloudrec.torch import RecordIterableDataset, collate_numpy
    fetch = dict(job.fetch)
    if fetch.get("cache", "none") != "none":
        fetch["cache_dir"] = cache_dir

    def decode(p):
        log("rec")
        return len(p)

    def collate(items):
        out = collate_numpy(items)
        log("batch_out", n=len(items))
        return out

    def winit(_w):
        log("worker_init")
    t0 = time.perf_counter()
    log("start")

    def rank_main(rank):
        log("open_start", rank=rank)
        ds = open_dataset(list(urls), storage_options=so)
        log("open_end", rank=rank)
        rds = RecordIterableDataset(ds, decode=decode, collate=collate, batch_size=job.batch_size,
                                    seed=job.seed, mode=job.mode, rank=rank,
                                    world_size=job.world_size, fetch_options=fetch)
        rds.set_epoch(job.epoch)
        loader = tud.DataLoader(rds, batch_size=None, num_workers=job.num_workers,
                                multiprocessing_context="fork" if job.num_workers else None,
                                worker_init_fn=winit if job.num_workers else None)
        log("iter_start", rank=rank)
        for b in loader:
            log("batch_in", rank=rank, n=len(b["ids"]))
        log("rank_end", rank=rank)
    th = [threading.Thread(target=rank_main, args=(r,)) for r in range(job.world_size)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    return time.perf_counter() - t0


def summarize(path: str, t0: float) -> None:
    ev = [json.loads(x) for x in open(path)]
    start = min(e["t"] for e in ev if e["k"] == "start")
    by = defaultdict(list)
    for e in ev:
        by[e["k"]].append(e)

    def rel(e):
        return e["t"] - start
    for k in ("open_start", "open_end", "iter_start", "worker_init", "fetcher_init", "fetch_call",
              "check_pid", "rank_end"):
        xs = by.get(k, [])
        print(f"{k:>14}: " + ", ".join(f"{rel(e):.3f}" + (f"(r{e['rank']})" if "rank" in e else
                                                         f"(p{e['pid'] % 1000})") for e in xs))
    for e in by.get("check_pid", []):
        print(f"   check_pid dt {e['dt']:.3f}")
    for e in by.get("fetcher_init", []):
        print(f"   fetcher_init dt {e['t'] - e['t0']:.3f} pid {e['pid'] % 1000}")
    gets = by.get("get", [])
    if gets:
        lat = sorted(e["t"] - e["t0"] for e in gets)
        nb = sum(e["n"] for e in gets)
        print(f"GETs {len(gets)}, {nb / 1e6:.1f} MB; GET duration p10/50/90/max "
              f"{lat[len(lat) // 10]:.3f}/{lat[len(lat) // 2]:.3f}/{lat[9 * len(lat) // 10]:.3f}/"
              f"{lat[-1]:.3f}; first submit {min(e['t0'] for e in gets) - start:.3f} "
              f"last done {max(e['t'] for e in gets) - start:.3f}")
        for pid in sorted({e["pid"] for e in gets}):
            g = [e for e in gets if e["pid"] == pid]
            busy = _union([(e["t0"], e["t"]) for e in g])
            span = max(e["t"] for e in g) - min(e["t0"] for e in g)
            print(f"  pid {pid % 1000}: {len(g)} GETs {sum(e['n'] for e in g) / 1e6:.1f} MB, "
                  f"first {min(e['t0'] for e in g) - start:.3f}, last {max(e['t'] for e in g) - start:.3f}"
                  f" busy {busy:.2f} of span {span:.2f}, mean inflight "
                  f"{sum(e['t'] - e['t0'] for e in g) / max(span, 1e-9):.1f}")
    # the first 64 requests each worker submitted: when they completed
    subs = by.get("sub", [])
    dones = by.get("req_done", [])
    for pid in sorted({e["pid"] for e in subs}):
        ss = [e for e in subs if e["pid"] == pid][:64]
        dd = {(e["shard"], e["a"]): rel(e) for e in dones if e["pid"] == pid}
        fin = sorted(dd.get((e["shard"], e["a"]), -1) for e in ss)
        print(f"  pid {pid % 1000}: first 64 submits {rel(ss[0]):.3f}..{rel(ss[-1]):.3f}, done "
              f"10th {fin[9]:.3f} 32nd {fin[31]:.3f} 64th {fin[-1]:.3f}")
    for e in by.get("download", []):
        print(f"  download shard {e['shard']} pid {e['pid'] % 1000}: {rel(e) - (e['t'] - e['t0']):.3f} -> {rel(e):.3f}")
    crcs = by.get("crc", [])
    if crcs:
        print(f"crc32_file: {len(crcs)} calls, {sum(e['n'] for e in crcs) / 1e6:.0f} MB, "
              f"{sum(e['cpu'] for e in crcs):.2f} CPU-s, in {len({e['pid'] for e in crcs})} processes")
    recs = by.get("rec", [])
    for pid in sorted({e["pid"] for e in recs}):
        r = [rel(e) for e in recs if e["pid"] == pid]
        bo = [rel(e) for e in by["batch_out"] if e["pid"] == pid]
        print(f"  worker {pid % 1000}: {len(r)} records {r[0]:.3f} -> {r[-1]:.3f}; batches out "
              + " ".join(f"{x:.2f}" for x in bo))
    for rank in sorted({e["rank"] for e in by["batch_in"]}):
        bi = [rel(e) for e in by["batch_in"] if e["rank"] == rank]
        print(f"  rank {rank} batches in: " + " ".join(f"{x:.2f}" for x in bi))
    print(f"wall {t0:.3f}")


def _union(iv):
    iv = sorted(iv)
    tot, cur_a, cur_b = 0.0, None, None
    for a, b in iv:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                tot += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        tot += cur_b - cur_a
    return tot


def cpu_of(pid: int) -> float:
    """utime + stime of a live process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", default="block 2 2", help="mode world workers")
    ap.add_argument("--cache", default="none")
    ap.add_argument("--max-gap", type=int, default=None)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--records", type=int, default=1600)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--kb", type=float, default=60.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cache-dir", default=None, help="keep the cache between repeats (warm)")
    args = ap.parse_args(argv)
    from cloudrec.dataset.synthetic import write_synthetic
    from cloudrec.sim import JobSpec
    from cloudrec.testing import FaultProxy, MotoServer
    mode, world, workers = args.job.split()
    fetch = {"cache": args.cache} if args.cache != "none" else {}
    if args.max_gap is not None:
        fetch["max_gap"] = args.max_gap
    job = JobSpec(world_size=int(world), num_workers=int(workers), batch_size=args.batch, mode=mode,
                  seed=1, ranks_per_node=int(world), fetch=fetch)
    rec = int(args.kb * 1000)
    instrument()
    with MotoServer() as moto, FaultProxy(moto.endpoint_url) as proxy:
        bucket = moto.new_bucket("simprobe")
        urls, _ = write_synthetic(bucket, args.shards, args.records // args.shards,
                                  min_size=rec // 2, max_size=rec * 3 // 2, magic_every=0,
                                  storage_options=moto.storage_options)
        proxy.configure(latency_ms=args.latency_ms)
        so = dict(proxy.storage_options)
        so.pop("config_kwargs", None)
        pids = {"moto": moto.procs["moto"].pid, "proxy": proxy.procs["faultproxy"].pid}
        MOTO_PROXY_PIDS.update(pids.values())
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as d:
                LOG["path"] = os.path.join(d, "log.jsonl")
                c0 = {k: cpu_of(p) for k, p in pids.items()}
                r0, ch0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
                cache_dir = args.cache_dir or os.path.join(d, "cache")
                sampler = ThreadSampler()
                wall = run(urls, job, so, cache_dir)
                print("worker threads CPU s:", {k: round(v, 2) for k, v in sampler.report().items()})
                r1, ch1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
                summarize(LOG["path"], wall)
                print("CPU s: " + ", ".join(f"{k} {cpu_of(p) - c0[k]:.2f}" for k, p in pids.items())
                      + f", main {r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime:.2f}"
                      f", workers {ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime:.2f}")
                print(proxy.traffic())
                proxy.configure(latency_ms=args.latency_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
