"""EpochSampler: this rank's batches of record ids, epoch after epoch, resumable.

The one order, partition and state object of every front end.  It glues an
epoch order (``epoch_order``'s modes, or ``'mxnet'``: MXNet's exact
ImageRecordIter shuffle) to a partition chosen by name: ``'steps'``
(cloudrec's: global steps dealt to ranks, :func:`partition_epoch`) or one of
MXNet's fixed parts (:mod:`cloudrec.reader.fixed_parts`).  Under ``'steps'``
the state is global (seed, epoch, samples consumed by all ranks together) and
restores the exact next batch on a restart, also with another number of
ranks; under a fixed partition it is the part's own progress and only fits the
same ``num_parts``.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional

import numpy as np

from cloudrec.errors import ConfigError
from cloudrec.reader.distenv import dist_info
from cloudrec.reader.fixed_parts import (FIXED_PARTITIONS, LAST_RULES, fixed_batches,
                                         fixed_partition, rollover_carry)
from cloudrec.reader.mxnet_shuffle import MXNetShuffle
from cloudrec.reader.orders import EXACT_GLOBAL_BELOW, MODES, _columns, epoch_order, file_order, order_plan
from cloudrec.reader.partition import LAST_MODES, EpochSlice, Leg, _check, num_steps, worker_slice
from cloudrec.reader.progress import parse_legs, resolve

# 2: 'steps' states carry the layout and legs (contiguous worker spans, lazy orders)
STATE_VERSION = 2
#: order modes: the reader's, plus MXNet's exact ImageRecordIter shuffle
ORDER_MODES = tuple(MODES) + ("mxnet",)
PARTITIONS = ("steps",) + tuple(FIXED_PARTITIONS)


class EpochSampler:
    """Batches ``(ids, is_pad)`` of rank ``rank`` of ``world_size`` (default: from the environment).

    Iterating yields the rest of the current epoch and then moves to the next
    epoch, so ``for e in range(E): s.set_epoch(e); for ids, pad in s: ...`` and
    a plain ``for ids, pad in s`` per epoch both work. ``order_options`` go to
    ``epoch_order`` (block_size, window_blocks, buffer_size, ...).

    ``partition`` is ``'steps'`` (default) or a fixed one (``'mxnet-count'``,
    ``'mxnet-bytes'``, ``'floor'``); ``base_order`` (record ids) replaces the
    file order a fixed partition cuts (ImageIter cuts the `.idx` line order);
    ``shard_sizes`` feed ``'mxnet-bytes'``.  ``last`` is ``'pad'``/``'drop'``
    under ``'steps'`` and any of :data:`LAST_RULES` under a fixed partition.
    """

    def __init__(self, n: Any, *, seed: int = 0, mode: str = "global", rank: Optional[int] = None,
                 world_size: Optional[int] = None, batch_size: int = 1, last: str = "pad",
                 part_index: Optional[int] = None, num_parts: Optional[int] = None,
                 order_options: Optional[Mapping[str, Any]] = None, epoch: int = 0,
                 partition: str = "steps", base_order: Optional[np.ndarray] = None,
                 shard_sizes: Optional[np.ndarray] = None) -> None:
        info = dist_info(rank, world_size, part_index=part_index, num_parts=num_parts)
        if partition not in PARTITIONS:
            raise ConfigError(f"unknown partition {partition!r}; choose one of {', '.join(PARTITIONS)}")
        rules = LAST_MODES if partition == "steps" else LAST_RULES
        if last not in rules:
            raise ConfigError(f"last must be one of {', '.join(map(repr, rules))} under the "
                              f"{partition!r} partition, got {last!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if mode not in ORDER_MODES:
            raise ConfigError(f"unknown order mode {mode!r}; choose one of {', '.join(ORDER_MODES)}")
        self.source = n
        self.num_records = _columns(n)[0]
        self.seed, self.mode, self.last = int(seed), mode, last
        self.rank, self.world_size = info.rank, info.world_size
        self.batch_size = int(batch_size)
        self.order_options = dict(order_options or {})
        self.partition = partition
        self.epoch = int(epoch)
        self.consumed = 0
        # 'steps': DataLoader workers the batches are consumed under (None: not declared, see
        # use_workers), and (epoch, closed legs, saved layout) of a resumed epoch
        self.num_workers: Optional[int] = None
        self._legs: tuple = (-1, (), None, 0)
        self._plan_cache: tuple = (None, None)
        self._order_cache: tuple[int, Optional[np.ndarray]] = (-1, None)
        self._orders: dict = {}
        self._fixed_cache: tuple = (None, None)
        self.part_ids: Optional[np.ndarray] = None  # the fixed part, in its base order
        if partition != "steps":
            base = file_order(n) if base_order is None else np.asarray(base_order, np.int64)
            self.part_ids = fixed_partition(partition, base, self.world_size, self.rank,
                                            _SizedTable(n, shard_sizes))
        self._mx: Optional[MXNetShuffle] = None
        if mode == "mxnet":
            self._mx = MXNetShuffle(self.num_part_records, self.seed)

    @property
    def fixed(self) -> bool:
        """True under one of MXNet's fixed partitions (each part read on its own)."""
        return self.part_ids is not None

    @property
    def num_part_records(self) -> int:
        """Records this sampler deals out per epoch: the part, or the whole dataset."""
        return self.num_records if self.part_ids is None else len(self.part_ids)

    # ----- the epoch
    @property
    def global_batch(self) -> int:
        """Samples consumed by one step of all ranks together (of the part, when fixed)."""
        return self.batch_size if self.fixed else self.world_size * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` from its start; the current epoch keeps its progress (for resumes)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        if int(epoch) != self.epoch:
            self.epoch, self.consumed = int(epoch), 0
            self._legs = (-1, (), None, 0)

    def order(self, epoch: Optional[int] = None) -> np.ndarray:
        """The full order of ``epoch`` (default the current one), cached for the current epoch.

        Under a fixed partition, the order of this part's records."""
        e = self.epoch if epoch is None else int(epoch)
        if self._order_cache[0] == e:
            return self._order_cache[1]
        cached = self._orders.get(e)
        if cached is not None:
            return cached
        if self.part_ids is None:
            if self._mx is not None:
                out = file_order(self.source)[self._mx.permutation(e)]
            else:
                out = epoch_order(self.source, self.seed, e, self.mode, **self.order_options)
        else:
            out = self._part_order(e)
        if e == self.epoch:
            self._order_cache = (e, out)
        else:  # pad-next and roll_over look one epoch ahead/back: keep a few
            if len(self._orders) >= 3:
                self._orders.pop(next(iter(self._orders)))
            self._orders[e] = out
        return out

    def _part_order(self, e: int) -> np.ndarray:
        part = self.part_ids
        if self.mode == "none" or len(part) <= 1:
            return part
        if self._mx is not None:
            return part[self._mx.permutation(e)]
        n, shard, offset, length = _columns(self.source)
        if shard is None:
            return part[epoch_order(len(part), self.seed, e, self.mode, **self.order_options)]
        sub = _SubTable(shard[part], offset[part], None if length is None else length[part])
        return part[epoch_order(sub, self.seed, e, self.mode, **self.order_options)]

    def _fixed_epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, is_pad) of a fixed part's whole epoch ``e``, batch after batch."""
        if self._fixed_cache[0] == (e, self.seed):
            return self._fixed_cache[1]
        carry = (rollover_carry(self.order, e, self.batch_size) if self.last == "roll_over"
                 else None)
        out = fixed_batches(self.order(e), self.batch_size, self.last,
                            next_order=lambda: self.order(e + 1), carry=carry)
        self._fixed_cache = ((e, self.seed), out)
        return out

    def epoch_slice(self, worker: int = 0, num_workers: int = 1) -> EpochSlice:
        """This rank's (and worker's) remaining share of the current epoch."""
        if self.fixed:
            ids, is_pad = self._fixed_epoch(self.epoch)
            b = self.batch_size
            steps = np.arange(self.consumed // b + worker, len(ids) // b, num_workers, dtype=np.int64)
            take = (steps[:, None] * b + np.arange(b)[None, :]).reshape(-1)
            return EpochSlice(ids=ids[take], is_pad=is_pad[take], batch_size=b,
                              steps=steps - self.consumed // b)
        _check(self.rank, self.world_size, worker, num_workers, self.batch_size, self.last)
        rest, layout, done, _ = self._progress(num_workers)
        return worker_slice(rest, layout, self.rank, worker, done)

    # ----- 'steps' progress: lazy order, closed legs, the current layout
    def _plan(self) -> Any:
        """This epoch's order, lazy (O(blocks)) for the reader's modes, the full array for 'mxnet'."""
        key = (self.epoch, self.seed)
        if self._plan_cache[0] != key:
            plan = self.order() if self.mode not in MODES else order_plan(
                self.source, self.seed, self.epoch, self.mode, **self.order_options)
            self._plan_cache = (key, plan)
        return self._plan_cache[1]

    def _restored(self) -> tuple:
        """(closed legs, saved layout, records consumed under it) restored for this epoch."""
        e, legs, saved, saved_at = self._legs
        return (legs, saved, saved_at) if e == self.epoch else ((), None, 0)

    def _progress(self, num_workers: int, consumed: Optional[int] = None) -> tuple:
        legs, saved, saved_at = self._restored()
        mine = (self.world_size, int(num_workers), self.batch_size, self.last)
        return resolve(self._plan(), legs, saved, saved_at, mine,
                       self.consumed if consumed is None else int(consumed))

    def use_workers(self, num_workers: int) -> None:
        """Declare the DataLoader workers (0 = in-process) this rank's batches are consumed under.

        Call it where batches are counted (the main process): ``state_dict`` then
        records the layout, so a restart with another worker count (or world size)
        closes it as a leg and deals the rest of the epoch exactly once.
        """
        self.num_workers = max(1, int(num_workers))

    def __len__(self) -> int:
        """Batches this rank still yields in the current epoch."""
        if self.fixed:
            return max(0, len(self._fixed_epoch(self.epoch)[0]) // self.batch_size
                       - self.consumed // self.batch_size)
        _, layout, done, _ = self._progress(self.num_workers or 1)
        return layout.T - done

    def batches_per_epoch(self) -> int:
        """Batches every rank yields in a whole epoch (this part's, when fixed)."""
        if self.fixed:
            return len(self._fixed_epoch(self.epoch)[0]) // self.batch_size
        return num_steps(self.num_records, world_size=self.world_size, batch_size=self.batch_size,
                         last=self.last)

    def advance(self, batches: int = 1) -> None:
        """Record that every rank consumed ``batches`` more batches (used by adapters that count)."""
        self.consumed = self.consumed_after(self.consumed, batches)

    def consumed_after(self, start: int, batches: int) -> int:
        """Global samples consumed after ``batches`` steps starting from ``start``."""
        if self.fixed:
            return start + batches * self.global_batch
        rest, layout, done, _ = self._progress(self.num_workers or 1, start)
        return rest.consumed + layout.consumed(done + batches)

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
        state = {"version": STATE_VERSION, "seed": self.seed, "epoch": self.epoch,
                 "consumed": int(self.consumed), "num_records": self.num_records, "mode": self.mode,
                 "world_size": self.world_size, "batch_size": self.batch_size,
                 "order_options": dict(self.order_options)}
        if self.fixed:
            state.update(partition=self.partition, part_index=self.rank, last=self.last)
        else:
            legs, saved, _ = self._restored()
            if self.num_workers is None:      # batches counted under the restored layout
                layout = saved or (self.world_size, 0, self.batch_size, self.last)
            else:
                layout = (self.world_size, self.num_workers, self.batch_size, self.last)
                legs = self._progress(self.num_workers)[3]
            state["layout"] = list(layout)
            state["legs"] = [leg.to_list() for leg in legs] if self.consumed else []
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` output (seed, epoch, consumed); checks it fits this dataset."""
        try:
            version, seed, epoch, consumed = (state["version"], state["seed"], state["epoch"],
                                              state["consumed"])
        except KeyError as exc:
            raise ConfigError(f"sampler state lacks {exc.args[0]!r}") from None
        if version not in (1, STATE_VERSION):
            raise ConfigError(f"sampler state version {version} is not 1 or {STATE_VERSION}")
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
        part = state.get("partition", "steps")
        if part != self.partition:
            raise ConfigError(f"sampler state is for the {part!r} partition, not {self.partition!r}")
        if self.fixed and (state.get("world_size") != self.world_size
                           or state.get("part_index") != self.rank
                           or state.get("batch_size") != self.batch_size):
            # MXNet's parts are cut before shuffling: another num_parts means other parts
            raise ConfigError(
                f"sampler state is for part {state.get('part_index')} of {state.get('world_size')} "
                f"(batch {state.get('batch_size')}) under MXNet's fixed {self.partition!r} "
                f"partition; this is part {self.rank} of {self.world_size} (batch "
                f"{self.batch_size}); resume with the same parts, or use cloudrec's 'steps' "
                "partition (part_mode='even') to change the world size")
        if int(epoch) < 0 or not 0 <= int(consumed):
            raise ConfigError(f"sampler state has a bad epoch/consumed: {epoch}, {consumed}")
        if int(seed) != self.seed:
            self._order_cache, self._orders, self._fixed_cache = (-1, None), {}, (None, None)
            if self._mx is not None:
                self._mx = MXNetShuffle(self.num_part_records, int(seed))
        legs, saved = self._state_legs(state, version, int(consumed))
        self.seed, self.epoch, self.consumed = int(seed), int(epoch), int(consumed)
        self._legs = (self.epoch, tuple(legs), saved, self.consumed)

    def _state_legs(self, state: Mapping[str, Any], version: int, consumed: int) -> tuple:
        """(closed legs, saved layout) of a 'steps' state; version 1 meant a consumed prefix."""
        if self.fixed:
            return (), None
        if version >= 2:
            return parse_legs(state)
        if consumed == 0:
            return (), None
        if self.mode in ("none", "mxnet") or (self.mode == "global" and self.num_records < EXACT_GLOBAL_BELOW):
            return (Leg(0, 0, 0, "prefix", consumed),), None   # same order, prefix consumed
        raise ConfigError(
            f"sampler state version 1 stopped mid-epoch ({consumed} records into epoch "
            f"{state['epoch']}) under cloudrec's earlier {self.mode!r} order, which this version "
            "computes differently; resume from an epoch boundary (consumed=0) instead")


class _SubTable:
    """shard/offset/length columns of a subset of records (a fixed part), for epoch_order."""

    def __init__(self, shard: np.ndarray, offset: np.ndarray, length: Optional[np.ndarray]) -> None:
        self.shard, self.offset, self.length = shard, offset, length


class _SizedTable:
    """A record table's columns plus the shard sizes MXNet's byte partition needs."""

    def __init__(self, source: Any, shard_sizes: Optional[np.ndarray]) -> None:
        n, self.shard, self.offset, self.length = _columns(source)
        self.shard_sizes = shard_sizes
