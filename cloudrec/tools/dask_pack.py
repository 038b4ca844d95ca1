"""``im2rec --engine dask``: one Dask task per shard, each writing its own shard.

Every task reads its slice of the list from ROOT, encodes it and writes
``PREFIX-0000i-of-0000N.rec/.idx`` under temporary names straight to the
destination URL; the driver renames all shards only when every task
succeeded (then writes the pack manifest), and deletes the temporaries
otherwise.  Without ``--scheduler`` a
LocalCluster (threads, no network) runs the tasks.  Dask is optional: this
module imports it only when called.
"""
from __future__ import annotations

import concurrent.futures as cf
import sys
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cloudrec.errors import ConfigError
from cloudrec.format.framing import ceil4
from cloudrec.format.irheader import HEADER_SIZE
from cloudrec.format.lst import ListEntry
from cloudrec.tools.packing import (EncodeOptions, ImageSource, PackError, PackReport,
                                    ShardedWriter, commit_pack, pack_entries, remove_temps,
                                    shard_bounds)


def _import_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--engine dask needs dask[distributed]: pip install "
                          "'cloudrec[dask]'") from exc
    return distributed


def plan_shards(entries: Sequence[ListEntry], source: ImageSource, *,
                num_shards: Optional[int] = None, shard_size: Optional[int] = None,
                pack_label: bool = False) -> List[Tuple[int, int]]:
    """``[(start, end), ...]`` list positions per shard.

    ``num_shards``: near-equal contiguous slices (the local engine's rule).
    ``shard_size``: greedy slices by the source files' sizes (exact for
    pass-through, an estimate when images are re-encoded).
    """
    n = len(entries)
    if num_shards:
        if num_shards > n:
            raise ConfigError(f"--num-shards {num_shards} is more than the {n} images")
        starts = shard_bounds(n, num_shards)
        return list(zip(starts, starts[1:] + [n]))
    if not shard_size:
        raise ConfigError("--engine dask needs --num-shards or --shard-size")
    with cf.ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(lambda e: _size_or_zero(source, e.path), entries))
    out: List[Tuple[int, int]] = []
    start, acc = 0, 0
    for i, (e, s) in enumerate(zip(entries, sizes)):
        labels = 4 * len(e.labels) if pack_label and len(e.labels) > 1 else 0
        rec = 8 + ceil4(HEADER_SIZE + labels + s)
        if i > start and acc + rec > shard_size:
            out.append((start, i))
            start, acc = i, 0
        acc += rec
    out.append((start, n))
    return out


def _size_or_zero(source: ImageSource, path: str) -> int:
    try:
        return source.size(path)
    except Exception:  # the task will report the unreadable file with its path
        return 0


def pack_shard_task(entries: Sequence[ListEntry], source: ImageSource, dir_url: str, base: str,
                    shard_index: int, num_shards: int, opts: EncodeOptions,
                    storage_options: Optional[Dict[str, Any]], on_error: str,
                    num_thread: int) -> PackReport:
    """One Dask task: pack ``entries`` into shard ``shard_index`` of ``num_shards``,
    left under temporary names (the driver commits)."""
    writer = ShardedWriter(dir_url, base, storage_options, total=len(entries),
                           num_shards=num_shards, shard_index=shard_index)
    return pack_entries(entries, source, writer, opts, num_thread=num_thread, pool="thread",
                        on_error=on_error, progress=False,
                        desc=f"{base} shard {shard_index}")


def _client(scheduler: Optional[str], n_workers: int):
    distributed = _import_distributed()
    if scheduler:
        return distributed.Client(scheduler), None
    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                       processes=False, dashboard_address=None)
    return distributed.Client(cluster), cluster


def pack_with_dask(entries: Sequence[ListEntry], source: ImageSource, dir_url: str, base: str,
                   opts: EncodeOptions, *, num_shards: Optional[int] = None,
                   shard_size: Optional[int] = None, on_error: str = "fail",
                   scheduler: Optional[str] = None, n_workers: int = 2, num_thread: int = 1,
                   storage_options: Optional[Dict[str, Any]] = None,
                   progress: Optional[bool] = None) -> PackReport:
    """Pack ``entries`` as Dask tasks, then commit every shard (or none)."""
    distributed = _import_distributed()
    plan = plan_shards(entries, source, num_shards=num_shards, shard_size=shard_size,
                       pack_label=opts.pack_label)
    count = len(plan)
    t0 = time.perf_counter()
    run_id = uuid.uuid4().hex[:8]
    client, cluster = _client(scheduler, n_workers)
    reports: List[PackReport] = []
    errors: List[BaseException] = []
    try:
        futures = [client.submit(pack_shard_task, list(entries[a:b]), source, dir_url, base, i,
                                 count, opts, storage_options, on_error, num_thread,
                                 key=f"im2rec-{base}-{i:05d}-of-{count:05d}-{run_id}",
                                 pure=False)
                   for i, (a, b) in enumerate(plan)]
        from tqdm.auto import tqdm

        with tqdm(total=count, desc=f"{base} (dask)", unit="shard", file=sys.stderr,
                  disable=(None if progress is None else not progress)) as bar:
            for fut in distributed.as_completed(futures):
                try:
                    reports.append(fut.result())
                except BaseException as exc:  # keep waiting: temporaries must be cleaned
                    errors.append(exc)
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    shards = sorted((sf for r in reports for sf in r.shards), key=lambda sf: sf.index)
    total = PackReport(records=sum(r.records for r in reports),
                       bytes_in=sum(r.bytes_in for r in reports),
                       bytes_out=sum(r.bytes_out for r in reports),
                       seconds=time.perf_counter() - t0, shards=shards,
                       failures=sorted((f for r in reports for f in r.failures),
                                       key=lambda f: f.index))
    if errors or total.records == 0:
        remove_temps(shards, storage_options)
        if errors:
            raise errors[0]
        raise PackError(f"no image could be packed ({len(total.failures)} failed)")
    commit_pack(shards, dir_url, base, storage_options, sharded=True)
    return total
