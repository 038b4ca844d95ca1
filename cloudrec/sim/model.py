"""What a simulation is asked: the job (ranks, workers, batch, order, cache) and the storage.

Defaults describe S3 from EC2: 20 ms to the first byte, ~90 MB/s per
connection, 25 Gbit/s (~3 GB/s) per node, 5,500 GET/s per prefix.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from cloudrec.errors import ConfigError
from cloudrec.reader.orders import MODES


@dataclass
class StorageModel:
    """Timing of one object store as seen from one node.

    ``latency_s``: time to first byte of one GET; ``stream_bw``: bytes/s of one
    connection; ``node_bw``: bytes/s into one node, all connections together;
    ``prefix_rate``: GET/s one prefix serves before it answers 503 SlowDown
    (S3: 5,500); ``prefixes``: how many prefixes the shards are spread over.
    """

    latency_s: float = 0.020
    stream_bw: float = 90e6
    node_bw: float = 3e9
    prefix_rate: float = 5500.0
    prefixes: int = 1

    def check(self) -> None:
        for name in ("stream_bw", "node_bw", "prefix_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"storage model {name} must be > 0, got {getattr(self, name)}")
        if self.latency_s < 0 or self.prefixes < 1:
            raise ConfigError("storage model latency must be >= 0 and prefixes >= 1")


@dataclass
class JobSpec:
    """A training job's reading side: what ``RecordIterableDataset`` would be given.

    ``fetch`` holds RecordFetcher options (max_gap, max_request, concurrency,
    readahead_bytes, window_bytes, cache, cache_max_bytes); ``order_options`` go
    to ``epoch_order``.  ``ranks_per_node`` ranks share a node (its bandwidth
    and shard cache).  ``sample_ranks`` > 0 plans only that many ranks (spread
    over the job) and scales per-node totals up; 0 plans every rank exactly.
    ``worker_start_s``: a DataLoader worker's start-up (fork, storage client)
    before its first request; measure it (bench/sim_validate.py does).
    """

    world_size: int = 1
    num_workers: int = 1
    batch_size: int = 256
    mode: str = "block"
    seed: int = 0
    epoch: int = 0
    last: str = "pad"
    ranks_per_node: int = 8
    order_options: Dict[str, Any] = field(default_factory=dict)
    fetch: Dict[str, Any] = field(default_factory=dict)
    table_file: bool = False
    sample_ranks: int = 0
    fractions: int = 8
    worker_start_s: float = 0.0   # DataLoader worker start-up before its first request

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown order mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("world_size", "num_workers", "batch_size", "ranks_per_node", "fractions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.worker_start_s < 0:
            raise ConfigError(f"worker_start_s must be >= 0, got {self.worker_start_s}")
        if self.sample_ranks < 0:
            raise ConfigError(f"sample_ranks must be >= 0, got {self.sample_ranks}")
        cache = self.fetch.get("cache", "none")
        if cache not in ("none", "shards", "auto"):
            raise ConfigError(f"cache must be 'none', 'shards' or 'auto', got {cache!r}")

    @property
    def nodes(self) -> int:
        return -(-self.world_size // self.ranks_per_node)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def settings(job: JobSpec, storage: StorageModel, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Everything that determines a result, for the JSON report."""
    return {"job": job.as_dict(), "storage": asdict(storage), **(extra or {})}
