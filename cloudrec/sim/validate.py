"""Run a simulated job for real, to check the simulator: every rank a
``RecordIterableDataset`` under a torch DataLoader with the job's workers, all
ranks at once (threads, each with its own worker processes), on the job's shards.

The caller counts requests and bytes where they happen (the loopback proxy,
``FaultProxy.traffic()``) and compares them with :func:`cloudrec.sim.simulate`.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from cloudrec.sim.model import JobSpec


def run_real(urls: Sequence[str], job: JobSpec, storage_options: Optional[Dict[str, Any]] = None,
             cache_dir: Optional[str] = None) -> Dict[str, Any]:
    """One epoch of ``job`` over the shards ``urls``; each rank opens the dataset itself.

    Returns wall seconds, the slowest rank's time to its first batch and to its
    opened dataset, and the records each rank received (pad included).
    """
    import torch.utils.data as tud

    from cloudrec.dataset import open_dataset
    from cloudrec.torch import RecordIterableDataset
    fetch = dict(job.fetch)
    if cache_dir is not None and fetch.get("cache", "none") != "none":
        fetch["cache_dir"] = cache_dir
    results: List[Dict[str, Any]] = [{} for _ in range(job.world_size)]
    errors: List[BaseException] = []
    t0 = time.perf_counter()

    def rank_main(rank: int) -> None:
        try:
            ds = open_dataset(list(urls), storage_options=storage_options)
            opened = time.perf_counter() - t0
            rds = RecordIterableDataset(ds, decode=len, batch_size=job.batch_size, seed=job.seed,
                                        mode=job.mode, rank=rank, world_size=job.world_size,
                                        last=job.last, order_options=job.order_options,
                                        fetch_options=fetch)
            rds.set_epoch(job.epoch)
            loader = tud.DataLoader(rds, batch_size=None, num_workers=job.num_workers,
                                    multiprocessing_context="fork" if job.num_workers else None)
            n, first = 0, None
            ids: List[int] = []
            for batch in loader:
                if first is None:
                    first = time.perf_counter() - t0
                ids += batch["ids"].tolist()
                n += len(batch["ids"])
            results[rank] = {"records": n, "first_batch_s": first, "ids": ids, "open_s": opened}
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(job.world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise errors[0]
    return {"seconds": time.perf_counter() - t0,
            "first_batch_s": max(r["first_batch_s"] or 0.0 for r in results),
            "open_s": max(r["open_s"] for r in results),
            "ranks": results}
