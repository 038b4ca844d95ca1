"""EpochSampler: this rank's batches of record ids, epoch after epoch, resumable.

It glues ``epoch_order`` (same on every rank) to ``partition_epoch`` (this
rank's share) and keeps the only state that matters globally: (seed, epoch,
samples consumed by all ranks together). A state saved by any rank restores
the exact next batch on a restart, also with a different number of ranks.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional

import numpy as np

from cloudrec.errors import ConfigError
from cloudrec.reader.distenv import dist_info
from cloudrec.reader.orders import MODES, _columns, epoch_order
from cloudrec.reader.partition import LAST_MODES, EpochSlice, num_steps, partition_epoch

STATE_VERSION = 1


class EpochSampler:
    """Batches ``(ids, is_pad)`` of rank ``rank`` of ``world_size`` (default: from the environment).

    Iterating yields the rest of the current epoch and then moves to the next
    epoch, so ``for e in range(E): s.set_epoch(e); for ids, pad in s: ...`` and
    a plain ``for ids, pad in s`` per epoch both work. ``order_options`` go to
    ``epoch_order`` (block_size, window_blocks, buffer_size, ...).
    """

    def __init__(self, n: Any, *, seed: int = 0, mode: str = "global", rank: Optional[int] = None,
                 world_size: Optional[int] = None, batch_size: int = 1, last: str = "pad",
                 part_index: Optional[int] = None, num_parts: Optional[int] = None,
                 order_options: Optional[Mapping[str, Any]] = None, epoch: int = 0) -> None:
        info = dist_info(rank, world_size, part_index=part_index, num_parts=num_parts)
        if last not in LAST_MODES:
            raise ConfigError(f"last must be 'pad' or 'drop', got {last!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.source = n
        self.num_records = _columns(n)[0]
        self.seed, self.mode, self.last = int(seed), mode, last
        self.rank, self.world_size = info.rank, info.world_size
        self.batch_size = int(batch_size)
        self.order_options = dict(order_options or {})
        self.epoch = int(epoch)
        self.consumed = 0
        self._order_cache: tuple[int, Optional[np.ndarray]] = (-1, None)
        if mode not in MODES:
            raise ConfigError(f"unknown order mode {mode!r}; choose one of {', '.join(MODES)}")

    # ----- the epoch
    @property
    def global_batch(self) -> int:
        """Samples consumed by one step of all ranks together."""
        return self.world_size * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` from its start; the current epoch keeps its progress (for resumes)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        if int(epoch) != self.epoch:
            self.epoch, self.consumed = int(epoch), 0

    def order(self, epoch: Optional[int] = None) -> np.ndarray:
        """The full order of ``epoch`` (default the current one), cached for the current epoch."""
        e = self.epoch if epoch is None else int(epoch)
        if self._order_cache[0] != e:
            self._order_cache = (e, epoch_order(self.source, self.seed, e, self.mode, **self.order_options))
        return self._order_cache[1]

    def epoch_slice(self, worker: int = 0, num_workers: int = 1) -> EpochSlice:
        """This rank's (and worker's) remaining share of the current epoch."""
        return partition_epoch(self.order(), rank=self.rank, world_size=self.world_size, worker=worker,
                               num_workers=num_workers, batch_size=self.batch_size, last=self.last,
                               start=self.consumed)

    def __len__(self) -> int:
        """Batches this rank still yields in the current epoch."""
        return num_steps(self.num_records, world_size=self.world_size, batch_size=self.batch_size,
                         last=self.last, start=self.consumed)

    def batches_per_epoch(self) -> int:
        """Batches every rank yields in a whole epoch."""
        return num_steps(self.num_records, world_size=self.world_size, batch_size=self.batch_size,
                         last=self.last)

    def advance(self, batches: int = 1) -> None:
        """Record that every rank consumed ``batches`` more batches (used by adapters that count)."""
        self.consumed = self.consumed_after(self.consumed, batches)

    def consumed_after(self, start: int, batches: int) -> int:
        """Global samples consumed after ``batches`` steps starting from ``start``."""
        done = start + batches * self.global_batch
        return min(done, self.num_records) if self.last == "pad" else done

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sl = self.epoch_slice()
        start, epoch = self.consumed, self.epoch
        for i in range(sl.num_batches):
            if self.epoch != epoch:  # set_epoch/load_state_dict from the loop body: stop this epoch
                return
            self.consumed = self.consumed_after(start, i + 1)
            yield sl.batch(i)
        if self.epoch == epoch:
            self.epoch, self.consumed = epoch + 1, 0

    # ----- state
    def state_dict(self) -> dict:
        """Global progress: restoring it on any rank, with any world size, resumes at the next sample."""
        return {"version": STATE_VERSION, "seed": self.seed, "epoch": self.epoch,
                "consumed": int(self.consumed), "num_records": self.num_records, "mode": self.mode,
                "world_size": self.world_size, "batch_size": self.batch_size,
                "order_options": dict(self.order_options)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` output (seed, epoch, consumed); checks it fits this dataset."""
        try:
            version, seed, epoch, consumed = (state["version"], state["seed"], state["epoch"],
                                              state["consumed"])
        except KeyError as exc:
            raise ConfigError(f"sampler state lacks {exc.args[0]!r}") from None
        if version != STATE_VERSION:
            raise ConfigError(f"sampler state version {version} is not {STATE_VERSION}")
        if state.get("num_records", self.num_records) != self.num_records:
            raise ConfigError(f"sampler state is for {state['num_records']} records, "
                              f"this dataset has {self.num_records}")
        if state.get("mode", self.mode) != self.mode:
            raise ConfigError(f"sampler state is for order mode {state['mode']!r}, not {self.mode!r}")
        saved_opts = dict(state.get("order_options", self.order_options))
        if saved_opts != self.order_options:
            # another block size/window would silently give another epoch order
            raise ConfigError(f"sampler state is for order options {saved_opts}, "
                              f"this sampler has {self.order_options}")
        if int(epoch) < 0 or not 0 <= int(consumed):
            raise ConfigError(f"sampler state has a bad epoch/consumed: {epoch}, {consumed}")
        if int(seed) != self.seed:
            self._order_cache = (-1, None)
        self.seed, self.epoch, self.consumed = int(seed), int(epoch), int(consumed)
