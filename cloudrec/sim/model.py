"""What a simulation is asked: the job (ranks, workers, batch, order, cache), the storage
and the node's CPU.

Storage defaults describe S3 from EC2: 20 ms to the first byte, ~90 MB/s per
connection, 25 Gbit/s (~3 GB/s) per node, 5,500 GET/s per prefix.  CPU costs
default to zero (the epoch bound by storage alone); ``bench/sim_validate.py``
measures them on this machine (``cloudrec.sim.calibrate``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Tuple

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
    # a server on the job's (first) node, e.g. moto + a proxy on loopback: name ->
    # (CPU s per request, CPU s per byte) of each of its single-threaded processes,
    # which use that node's cores too
    server_cpu: Dict[str, Tuple[float, float]] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("stream_bw", "node_bw", "prefix_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"storage model {name} must be > 0, got {getattr(self, name)}")
        if self.latency_s < 0 or self.prefixes < 1:
            raise ConfigError("storage model latency must be >= 0 and prefixes >= 1")
        if any(min(v) < 0 for v in self.server_cpu.values()):
            raise ConfigError("server CPU costs must be >= 0")


@dataclass
class HostModel:
    """CPU of the job's own processes on one node (all costs CPU seconds; 0 = free).

    ``cores``: cores the node's processes share (the servers of
    ``StorageModel.server_cpu`` too); 0 = as many as there are processes.
    Every process is also bound to one core (one GIL): a DataLoader worker's
    client work and record work add up.  ``request_cpu_s`` / ``byte_cpu_s``:
    the storage client's cost per GET and per byte received (botocore signing
    and parsing, aiohttp); ``record_cpu_s``: a worker's per record (framing,
    decode, collate, hand-off); ``main_batch_cpu_s``: the rank's main process
    per batch received; ``cache_byte_cpu_s``: what the shard cache adds per
    downloaded byte (writing, CRC, streaming from the partial file, local
    reads); ``cache_follow_cpu_s``: what a process spends on a shard that another
    process of its node downloads (lock, progress file, partial reads), per
    (process, shard) pair; ``worker_start_s``: wall time from the DataLoader's ``iter()`` to a
    worker's first request (fork, its storage client);
    ``worker_start_cpu_s``: the CPU of that; ``open_cpu_s``: ``open_dataset``'s
    CPU per rank beyond its requests (client set-up, `.idx` parsing).
    """

    cores: float = 0.0
    request_cpu_s: float = 0.0
    byte_cpu_s: float = 0.0
    record_cpu_s: float = 0.0
    main_batch_cpu_s: float = 0.0
    cache_byte_cpu_s: float = 0.0
    cache_follow_cpu_s: float = 0.0
    worker_start_s: float = 0.0
    worker_start_cpu_s: float = 0.0
    open_cpu_s: float = 0.0

    def check(self) -> None:
        bad = [k for k, v in asdict(self).items() if v < 0]
        if bad:
            raise ConfigError(f"host model {', '.join(bad)} must be >= 0")


@dataclass
class JobSpec:
    """A training job's reading side: what ``RecordIterableDataset`` would be given.

    ``fetch`` holds RecordFetcher options (max_gap, max_request, concurrency,
    readahead_bytes, window_bytes, cache, cache_max_bytes, and ``spool``: False models a
    job whose workers share no spool, :mod:`cloudrec.reader.spool`); ``order_options`` go
    to ``epoch_order``.  ``ranks_per_node`` ranks share a node (its bandwidth
    and shard cache).  ``sample_ranks`` > 0 plans only that many ranks (spread
    over the job) and scales per-node totals up; 0 plans every rank exactly.
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

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown order mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("world_size", "num_workers", "batch_size", "ranks_per_node", "fractions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
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


def settings(job: JobSpec, storage: StorageModel, host: Optional[HostModel] = None,
             extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Everything that determines a result, for the JSON report."""
    return {"job": job.as_dict(), "storage": asdict(storage),
            "host": asdict(host or HostModel()), **(extra or {})}
