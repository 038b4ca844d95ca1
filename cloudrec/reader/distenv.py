"""Where am I: rank / world size and DataLoader worker, from arguments or the environment.

Lookup order for the rank: explicit arguments (``rank``/``world_size`` or MXNet's
``part_index``/``num_parts``), an initialised ``torch.distributed``, the
torchrun variables RANK / WORLD_SIZE / LOCAL_RANK, then Horovod and OpenMPI
variables; else a single process. torch is imported only if already loaded
by the caller or installed, never required.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping, Optional

from cloudrec.errors import ConfigError

_ENV_SETS = (
    ("env", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("horovod", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on the node, and where it came from."""

    rank: int
    world_size: int
    local_rank: int = 0
    source: str = "default"


def _torch_dist() -> Optional[DistInfo]:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return DistInfo(dist.get_rank(), dist.get_world_size(), local, "torch.distributed")
    except Exception:  # a broken or partial torch install must not break data loading
        return None
    return None


def _int_env(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not an integer") from None


def _from_env(env: Mapping[str, str]) -> Optional[DistInfo]:
    for source, rk, ws, lr in _ENV_SETS:
        if rk in env and ws in env:
            info = DistInfo(_int_env(env, rk), _int_env(env, ws),
                            _int_env(env, lr) if lr in env else 0, source)
            _validate(info.rank, info.world_size, source)
            return info
    return None


def _validate(rank: int, world_size: int, source: str) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} not in [0, world_size={world_size}) (from {source})")


def dist_info(rank: Optional[int] = None, world_size: Optional[int] = None, *,
              part_index: Optional[int] = None, num_parts: Optional[int] = None,
              env: Optional[Mapping[str, str]] = None) -> DistInfo:
    """Rank and world size: arguments first, then torch.distributed, then env vars (see module doc)."""
    if part_index is not None or num_parts is not None:
        if rank is not None or world_size is not None:
            raise ConfigError("give either rank/world_size or part_index/num_parts, not both")
        rank = 0 if part_index is None else part_index
        world_size = 1 if num_parts is None else num_parts
    if rank is not None or world_size is not None:
        r = 0 if rank is None else int(rank)
        w = 1 if world_size is None else int(world_size)
        _validate(r, w, "arguments")
        return DistInfo(r, w, 0, "arguments")
    info = _torch_dist()
    if info is not None:
        return info
    info = _from_env(os.environ if env is None else env)
    return info if info is not None else DistInfo(0, 1, 0, "default")


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current torch DataLoader worker, or (0, 1)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0, 1
    try:
        from torch.utils.data import get_worker_info
    except Exception:
        return 0, 1
    info = get_worker_info()
    return (0, 1) if info is None else (int(info.id), int(info.num_workers))
