"""Split one epoch's order among ranks and DataLoader workers, exactly once.

The order is cut into global steps of ``world_size * batch_size`` positions;
in step g rank r takes positions ``[g*W*B + r*B, g*W*B + (r+1)*B)``, and
worker k of that rank takes the rank's batches g with ``g % K == k`` (so a
DataLoader, which polls its workers round-robin, yields the rank's batches in
order). Since every step consumes the same prefix of the order on all ranks,
"samples consumed" is one global number and a restart may change W.
The last incomplete step is padded with records repeated from the start of
the epoch (``last='pad'``, reported in ``is_pad``) or dropped (``last='drop'``);
either way every rank gets the same number of full batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudrec.errors import ConfigError

LAST_MODES = ("pad", "drop")


@dataclass(frozen=True)
class EpochSlice:
    """One rank/worker's share of an epoch: ``ids`` and ``is_pad``, ``batch_size`` per batch.

    ``steps[i]`` is the global step (rank-local batch number) of batch i, which
    the consumer needs to turn progress into a global sample count.
    """

    ids: np.ndarray
    is_pad: np.ndarray
    batch_size: int
    steps: np.ndarray

    @property
    def num_batches(self) -> int:
        return len(self.steps)

    @property
    def num_pad(self) -> int:
        return int(self.is_pad.sum())

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch i of this slice as (ids, is_pad)."""
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.ids[s], self.is_pad[s]

    def batches(self):
        """Iterate over (ids, is_pad) batches."""
        for i in range(self.num_batches):
            yield self.batch(i)


def _check(rank: int, world_size: int, worker: int, num_workers: int, batch_size: int, last: str) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ConfigError(f"worker must be in [0, num_workers), got worker={worker} num_workers={num_workers}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if last not in LAST_MODES:
        raise ConfigError(f"last must be 'pad' or 'drop', got {last!r}")


def num_steps(n: int, *, world_size: int = 1, batch_size: int = 1, last: str = "pad",
              start: int = 0) -> int:
    """Batches every rank yields for an epoch of ``n`` records resumed at global sample ``start``."""
    rest = max(0, n - start)
    step = world_size * batch_size
    return -(-rest // step) if last == "pad" else rest // step


def partition_epoch(order: np.ndarray, *, rank: int = 0, world_size: int = 1, worker: int = 0,
                    num_workers: int = 1, batch_size: int = 1, last: str = "pad",
                    start: int = 0) -> EpochSlice:
    """Rank ``rank``/worker ``worker``'s share of ``order[start:]`` in global steps (see module doc).

    ``start`` is the number of samples already consumed globally (a resume);
    pad records always repeat from ``order[0]`` on, cycling if the epoch is short.
    """
    _check(rank, world_size, worker, num_workers, batch_size, last)
    order = np.asarray(order, dtype=np.int64)
    n = len(order)
    if start < 0:
        raise ConfigError(f"start must be >= 0, got {start}")
    steps_total = num_steps(n, world_size=world_size, batch_size=batch_size, last=last, start=start)
    steps = np.arange(worker, steps_total, num_workers, dtype=np.int64)
    if steps_total and n == 0:
        raise ConfigError("cannot pad an empty epoch")
    # global positions of this worker's samples, shape (batches, batch_size)
    pos = (start + steps[:, None] * (world_size * batch_size) + rank * batch_size
           + np.arange(batch_size, dtype=np.int64)[None, :]).reshape(-1)
    is_pad = pos >= n
    ids = order[np.where(is_pad, (pos - n) % max(n, 1), pos)] if len(pos) else np.empty(0, np.int64)
    return EpochSlice(ids=ids, is_pad=is_pad, batch_size=batch_size, steps=steps)
