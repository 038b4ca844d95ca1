"""Split one epoch's order among ranks and DataLoader workers, exactly once, in contiguous runs.

Layout (``world_size`` W ranks, ``num_workers`` K per rank, batch B): every rank
yields the same number T of batches, ``ceil(n / (W*B))`` (``last='pad'``) or
``n // (W*B)`` (``'drop'``). Rank r owns one contiguous span of the order,
``n // W`` or ``n // W + 1`` records long under ``'pad'`` (``T*B`` under
``'drop'``, the remainder dropped), and its batch i comes from worker
``i % K``: worker k owns one contiguous sub-span holding exactly its batches,
read front to back. So a process's reads never interleave with another's in
the order (``block``/``shard``/``none`` orders are file-contiguous within a
window or buffer, so a coalesced byte range covers only this worker's
records, except in the one window at each end of its span), a DataLoader
polling its workers round-robin yields the rank's batches in a fixed
sequence, and only the rank's last batch holds padding (at most B - 1 pads
per rank unless n < W*(T-1)*B + W makes a whole pad batch unavoidable).
Pad records repeat the order from its start, cycling.

Progress under a layout is the number of rank batches i every rank has
yielded; the records consumed by all ranks together are ``min(n, i*W*B)``
whatever K is. A resume under another layout (W, K, B or ``last`` changed)
closes the old one as a :class:`Leg`: its unconsumed records, in order
position order, form the order the next layout partitions
(:class:`RemainingOrder`), so every remaining record is read exactly once.
Memory per process: O(W*K) per leg plus the process's own records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
# np.unique's first call imports numpy.ma (~20 ms); imported here, before any DataLoader
# forks, so a worker does not pay it on its way to its first batch (every epoch, for
# workers that are not persistent)
import numpy.ma  # noqa: F401,E402

from cloudrec.errors import ConfigError

LAST_MODES = ("pad", "drop")


@dataclass(frozen=True)
class EpochSlice:
    """One rank/worker's share of an epoch: ``ids`` and ``is_pad``, ``batch_size`` per batch.

    ``steps[i]`` is the rank batch number of batch i counted from the resume
    point (0 = the first batch this rank yields from there), which the
    consumer turns into a global sample count. ``chunk_starts`` are indices into
    ``ids`` where a shuffle window (block) or buffer (shard) of the order begins:
    a fetcher that cuts its look-ahead windows there plans each window's blocks
    once (empty when the order has no such structure or after a resume).
    ``exclusive`` = (lo, hi): ``ids[lo:hi]`` lie in windows no other worker
    reads, so merging gaps between them moves no one else's bytes; records
    outside it share their window with a neighbouring worker's span (a fetcher
    should plan those without gap merging). None: unknown (a ``global`` order,
    or after a resume under another layout).
    """

    ids: np.ndarray
    is_pad: np.ndarray
    batch_size: int
    steps: np.ndarray
    chunk_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    exclusive: Optional[Tuple[int, int]] = None

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


@dataclass(frozen=True)
class Leg:
    """A layout part of an epoch was consumed under: ``done`` rank batches of
    (world_size, num_workers, batch_size, last). ``last='prefix'`` means the
    first ``done`` positions of the order (states of cloudrec's earlier layout)."""

    world_size: int
    num_workers: int
    batch_size: int
    last: str
    done: int

    def to_list(self) -> list:
        return [self.world_size, self.num_workers, self.batch_size, self.last, self.done]

    @classmethod
    def from_list(cls, item: Sequence[Any]) -> "Leg":
        try:
            w, k, b, last, done = item
            leg = cls(int(w), int(k), int(b), str(last), int(done))
        except (TypeError, ValueError):
            raise ConfigError(f"sampler state has a malformed leg {item!r}") from None
        if last not in LAST_MODES + ("prefix",) or leg.done < 0 or (
                last != "prefix" and min(leg.world_size, leg.num_workers, leg.batch_size) < 1):
            raise ConfigError(f"sampler state has a malformed leg {item!r}")
        return leg


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
    """Batches every rank yields for ``n`` records of which the first ``start`` are done."""
    rest = max(0, n - start)
    step = world_size * batch_size
    return -(-rest // step) if last == "pad" else rest // step


class Layout:
    """Where every rank x worker's records sit in an order of ``n`` positions (see module doc)."""

    def __init__(self, n: int, world_size: int, num_workers: int, batch_size: int, last: str) -> None:
        W, K, B = world_size, num_workers, batch_size
        self.n, self.W, self.K, self.B, self.last = n, W, K, B, last
        self.T = T = num_steps(n, world_size=W, batch_size=B, last=last)
        r = np.arange(W, dtype=np.int64)
        if last == "pad":
            self.real = n // W + (r < n % W)                       # records of each rank
            self.rank_start = r * (n // W) + np.minimum(r, n % W)
        else:
            self.real = np.full(W, T * B, np.int64)
            self.rank_start = r * T * B
        self.pad = T * B - self.real
        self.pad_start = np.cumsum(self.pad) - self.pad              # global pad counter
        k = np.arange(K, dtype=np.int64)
        self.worker_batches = np.maximum(0, -(-(T - k) // K))        # T_k
        self.last_worker = (T - 1) % K if T else -1
        count = self.worker_batches[None, :] * B - np.where(k == self.last_worker, self.pad[:, None], 0)
        self.count = count                                           # (W, K) real records
        self.start = self.rank_start[:, None] + np.cumsum(count, axis=1) - count

    def worker_done(self, done: int) -> np.ndarray:
        """Batches each worker has yielded after ``done`` rank batches (per worker k)."""
        k = np.arange(self.K, dtype=np.int64)
        return np.maximum(0, -(-(min(done, self.T) - k) // self.K))

    def consumed(self, done: int) -> int:
        """Records all ranks consumed after ``done`` rank batches: ``min(n, done*W*B)`` for 'pad'."""
        return int(np.minimum(self.worker_done(done)[None, :] * self.B, self.count).sum())

    def remaining(self, done: int) -> Tuple[np.ndarray, np.ndarray]:
        """(start, length) of the unconsumed spans after ``done`` rank batches, in position order."""
        used = np.minimum(self.worker_done(done)[None, :] * self.B, self.count)
        starts = (self.start + used).reshape(-1)
        lens = (self.count - used).reshape(-1)
        tail = self.W * self.T * self.B if self.last == "drop" else self.n
        if tail < self.n:
            starts, lens = np.append(starts, tail), np.append(lens, self.n - tail)
        keep = lens > 0
        return starts[keep], lens[keep]


class RemainingOrder:
    """An order seen through closed legs: position v -> the v-th unconsumed position, lazily.

    ``order`` is a full order array or an :class:`~cloudrec.reader.orders.OrderPlan`.
    """

    def __init__(self, order: Any, legs: Sequence[Leg] = ()) -> None:
        if isinstance(order, (np.ndarray, list, tuple)) or not hasattr(order, "take"):
            order = _ArrayPlan(np.asarray(order))   # (an ndarray's own .take is not ours)
        self.order = order
        self.levels: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        n = len(order)
        self.consumed = 0
        for leg in legs:
            if leg.last == "prefix":
                d = min(leg.done, n)
                starts, lens = np.array([d], np.int64), np.array([n - d], np.int64)
            else:
                lay = Layout(n, leg.world_size, leg.num_workers, leg.batch_size, leg.last)
                starts, lens = lay.remaining(leg.done)
            cum = np.cumsum(lens) - lens
            self.levels.append((starts.astype(np.int64), lens.astype(np.int64), cum))
            left = int(lens.sum())
            self.consumed += n - left
            n = left
        self.n = n
        self.dtype = getattr(order, "dtype", np.int64)

    def __len__(self) -> int:
        return self.n

    def _ranges(self, a: int, b: int) -> List[Tuple[int, int]]:
        ranges = [(a, b)]
        for starts, lens, cum in reversed(self.levels):
            out: List[Tuple[int, int]] = []
            for lo, hi in ranges:
                j0 = int(np.searchsorted(cum, lo, side="right")) - 1
                j1 = int(np.searchsorted(cum, hi - 1, side="right")) - 1
                for j in range(j0, j1 + 1):
                    x, y = max(lo, int(cum[j])), min(hi, int(cum[j] + lens[j]))
                    p = (int(starts[j]) + x - int(cum[j]), int(starts[j]) + y - int(cum[j]))
                    if out and out[-1][1] == p[0]:
                        out[-1] = (out[-1][0], p[1])
                    else:
                        out.append(p)
            ranges = out
        return ranges

    def take(self, a: int, b: int) -> np.ndarray:
        """Ids at positions [a, b) of the remaining order."""
        a, b = max(0, int(a)), min(self.n, int(b))
        if b <= a:
            return np.empty(0, self.dtype)
        parts = [self.order.take(x, y) for x, y in self._ranges(a, b)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def chunk_starts(self, a: int, b: int) -> np.ndarray:
        """The order's window/buffer starts in (a, b), where no leg remaps positions."""
        if self.levels or not hasattr(self.order, "chunk_starts"):
            return np.zeros(0, np.int64)
        return self.order.chunk_starts(a, b)

    def exclusive(self, a: int, b: int) -> Optional[Tuple[int, int]]:
        """(lo, hi) relative to ``a``: the part of positions [a, b) whose windows lie inside it."""
        check = getattr(self.order, "is_chunk_start", None)
        if self.levels or check is None or check(a) is None or b <= a:
            return None
        starts = self.order.chunk_starts(a, b)
        head, tail = check(a), check(b)
        if not len(starts):
            return (0, b - a) if head and tail else (0, 0)
        lo = 0 if head else int(starts[0]) - a
        hi = b - a if tail else int(starts[-1]) - a
        return (lo, hi) if hi > lo else (0, 0)

    def take_at(self, pos: np.ndarray) -> np.ndarray:
        """Ids at arbitrary positions (pads): one ``take`` per run of consecutive positions."""
        pos = np.asarray(pos, np.int64)
        if pos.size == 0:
            return np.empty(0, self.dtype)
        uniq = np.unique(pos)
        cuts = np.flatnonzero(np.diff(uniq) != 1) + 1
        runs = np.split(uniq, cuts)
        vals = np.concatenate([self.take(int(r[0]), int(r[-1]) + 1) for r in runs])
        return vals[np.searchsorted(uniq, pos)]


class _ArrayPlan:
    """A full order array with the OrderPlan interface."""

    def __init__(self, order: np.ndarray) -> None:
        self.a = order
        self.n = len(order)
        self.dtype = order.dtype if order.dtype.kind in "iu" else np.int64

    def __len__(self) -> int:
        return self.n

    def take(self, a: int, b: int) -> np.ndarray:
        return self.a[a:b].astype(self.dtype, copy=False)


def worker_slice(rest: RemainingOrder, layout: Layout, rank: int, worker: int, done: int) -> EpochSlice:
    """Rank ``rank``/worker ``worker``'s batches under ``layout`` of ``rest`` after ``done`` rank batches.

    A DataLoader polls worker 0 first, so after a resume DataLoader worker ``w``
    serves the layout's worker ``(w + done) % K``: the next rank batch comes first.
    """
    B, K = layout.B, layout.K
    if done > layout.T:
        raise ConfigError(f"{done} batches done, but the layout has {layout.T} per rank")
    worker = (worker + done) % K
    j0 = int(layout.worker_done(done)[worker])
    nb = int(layout.worker_batches[worker]) - j0
    first = int(layout.start[rank, worker]) + j0 * B
    last = int(layout.start[rank, worker] + layout.count[rank, worker])
    ids = rest.take(first, last)
    npad = nb * B - len(ids)
    is_pad = np.zeros(nb * B, bool)
    if npad:
        if rest.n == 0:
            raise ConfigError("cannot pad an empty epoch")
        p0 = int(layout.pad_start[rank]) + int(layout.pad[rank]) - npad
        ids = np.concatenate([ids, rest.take_at((p0 + np.arange(npad)) % rest.n)])
        is_pad[len(is_pad) - npad:] = True
    steps = (np.arange(j0, j0 + nb, dtype=np.int64) * K + worker) - done
    return EpochSlice(ids=ids, is_pad=is_pad, batch_size=B, steps=steps,
                      chunk_starts=rest.chunk_starts(first, last) - first,
                      exclusive=rest.exclusive(first, last))


def partition_epoch(order: Any, *, rank: int = 0, world_size: int = 1, worker: int = 0,
                    num_workers: int = 1, batch_size: int = 1, last: str = "pad",
                    start: int = 0, legs: Sequence[Leg] = (), done: int = 0) -> EpochSlice:
    """Rank ``rank``/worker ``worker``'s share of an epoch (see module doc).

    ``order`` is the full order or an OrderPlan. Resume points: ``start``
    positions of the order already read as a prefix, then closed ``legs``,
    then ``done`` rank batches of this very layout.
    """
    _check(rank, world_size, worker, num_workers, batch_size, last)
    if start < 0 or done < 0:
        raise ConfigError(f"start and done must be >= 0, got {start}, {done}")
    prefix = [Leg(0, 0, 0, "prefix", int(start))] if start else []
    rest = RemainingOrder(order, prefix + list(legs))
    layout = Layout(rest.n, world_size, num_workers, batch_size, last)
    return worker_slice(rest, layout, rank, worker, int(done))
