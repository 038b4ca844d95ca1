"""The dataset a simulation reads: a real one's record table, or a synthetic one.

A synthetic dataset is N records in S equal shards with sizes drawn from a
named distribution; it has the columns the readers use (shard, offset,
length) and nothing else, so 14 M records cost ~340 MB of numpy, no files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np

from cloudrec.dataset.shards import Shard
from cloudrec.dataset.table import RecordTable
from cloudrec.errors import ConfigError

SIZE_DISTS = ("fixed", "uniform", "lognormal")


@dataclass
class SimDataset:
    """What the readers need from a dataset: ``table`` and ``shards`` (sizes, URLs)."""

    table: RecordTable
    shards: List[Shard]
    idx_sizes: List[int] = field(default_factory=list)
    name: str = "synthetic"

    def __len__(self) -> int:
        return len(self.table)

    @property
    def nbytes(self) -> int:
        return sum(s.size for s in self.shards)


def synthetic(records: int, shards: int, *, mean_bytes: float = 110_000, dist: str = "lognormal",
              sigma: float = 0.5, seed: int = 0, prefix: str = "s3://bucket/train") -> SimDataset:
    """``records`` records split as evenly as possible over ``shards`` shards.

    ``dist``: ``fixed`` (every record ``mean_bytes``), ``uniform`` (0.5x-1.5x the
    mean) or ``lognormal`` (mean ``mean_bytes``, log-sd ``sigma``: photo sizes).
    Lengths include RecordIO framing and are multiples of 4, as on disk.
    """
    if records < 1 or shards < 1 or shards > records:
        raise ConfigError(f"need 1 <= shards <= records, got {shards} shards, {records} records")
    if mean_bytes < 16:
        raise ConfigError(f"mean record size must be >= 16 bytes, got {mean_bytes}")
    if dist not in SIZE_DISTS:
        raise ConfigError(f"unknown size distribution {dist!r}; choose one of {', '.join(SIZE_DISTS)}")
    rng = np.random.default_rng(seed)
    if dist == "fixed":
        size = np.full(records, mean_bytes)
    elif dist == "uniform":
        size = rng.uniform(0.5 * mean_bytes, 1.5 * mean_bytes, records)
    else:
        size = rng.lognormal(np.log(mean_bytes) - sigma ** 2 / 2, sigma, records)
    length = (np.maximum(16, size).astype(np.int64) + 3) & ~np.int64(3)
    per = np.full(shards, records // shards, np.int64)
    per[: records % shards] += 1
    shard = np.repeat(np.arange(shards, dtype=np.int32), per)
    starts = np.repeat(np.cumsum(per) - per, per)
    csum = np.cumsum(length)
    first_end = np.concatenate([[0], csum])[np.cumsum(per) - per]
    offset = csum - length - np.repeat(first_end, per)
    del starts
    sizes = np.bincount(shard, weights=length, minlength=shards).astype(np.int64)
    width = max(4, len(str(shards - 1)))
    shard_list = [Shard(f"{prefix}-{i:0{width}d}.rec", f"{prefix}-{i:0{width}d}.idx", int(sizes[i]),
                        "synthetic") for i in range(shards)]
    table = RecordTable(shard, np.arange(records, dtype=np.int64), offset, length)
    # an .idx line is "key\toffset\n": ~ digits of both plus two bytes
    idx = [int(p * (len(str(records)) + len(str(int(s))) + 2)) for p, s in zip(per, sizes)]
    return SimDataset(table, shard_list, idx, "synthetic")


def from_dataset(ds: Any, idx_sizes: Optional[List[int]] = None) -> SimDataset:
    """Wrap an opened ShardedDataset (or anything with ``table`` and ``shards``)."""
    shards = [Shard(s.rec_url, s.idx_url, int(s.size), s.version) for s in ds.shards]
    if idx_sizes is None:
        # .idx sizes are not kept by open_dataset: estimate them as synthetic() does
        per = np.bincount(ds.table.shard, minlength=len(shards)) if len(ds.table) else \
            np.zeros(len(shards), np.int64)
        idx_sizes = [int(p * (len(str(len(ds.table))) + len(str(s.size)) + 2))
                     for p, s in zip(per, shards)]
    return SimDataset(ds.table, shards, list(idx_sizes), getattr(ds, "name", "dataset"))
