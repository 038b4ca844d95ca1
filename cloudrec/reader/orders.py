"""Epoch orders: which record comes when, as a pure function of (seed, epoch, mode).

Every rank computes the same order from the same (seed, epoch) without talking
to the others, and a restart recomputes it exactly. Modes trade shuffle
quality against how sequential the reads are. Measured by ``bench/orders.py``
(N = 100,000 records of 110 KB in 8 shards, block_size 256, window_blocks 8,
buffer_size 4096; a planner looking 2,048 records ahead, merging records of
one shard at most 2 apart):

=========================  ======  =====  ======  =======  =====
mode                       disp    rho    near    reqs/1k  amp
=========================  ======  =====  ======  =======  =====
global                     0.333   0.000  0.005   941      1.06
block                      0.319   0.075  0.233   23.8     1.03
block, within=interleave   0.319   0.075  0.996   5.8      1.00
shard                      0.252   0.343  0.124   124      1.49
none                       0.000   1.000  1.000   0.6      1.00
=========================  ======  =====  ======  =======  =====

disp: mean |order position - file position| / N (uniform 1/3); rho: rank
correlation with file order (uniform 0); near: share of file-neighbour pairs
emitted within 256 positions of each other (uniform ~0.005); reqs/1k:
byte-range requests per 1,000 records; amp: bytes fetched / bytes needed.

``global`` is a uniform permutation: right on local disk or a cached shard,
but one GET per record from object storage. ``block`` permutes blocks of
``block_size`` file-contiguous records (default: ``block_bytes`` = 2 MB
worth) and shuffles records inside windows of ``window_blocks`` blocks:
globally near-uniform, 40x fewer requests than ``global``; the price is
local: records of one block stay within a window (~16 MB) of each other, so
neighbouring batches are correlated. The reader should look ahead at least
one window: with a 512-record look-ahead the same order needs 444 reqs/1k
(amp 1.45); ``within='interleave'`` (a random merge of the window's blocks,
each kept in file order; same batch mix, but a block's records come in
file order) needs 17.6 there and 5.8 at 2,048. ``shard`` permutes whole
shards and shuffles inside a buffer of ``buffer_size`` records: its global
mixing is only as good as a permutation of the shards (rho 0.34 with 8
shards). ``none`` is file order, for evaluation and MXNet-compatible
unshuffled reads. An order of 1.28 M records (ImageNet) takes 0.1-0.2 s to
compute in any mode (same bench, ``--records 1281167 --shards 1024``).

Every order is also an :class:`OrderPlan` (:func:`order_plan`) whose
``take(a, b)`` gives positions [a, b) without the rest of the epoch: blocks
and shards are permuted globally (O(blocks) / O(shards) state), a window or
buffer is shuffled by sorting keyed 64-bit hashes of its positions, and
``global`` is, from 65,536 records on, a keyed Feistel bijection over [0, n)
(uniform by the same statistics: disp 0.334, rho -0.003, near 0.005; below
that, numpy's exact permutation). So a rank x DataLoader worker computes only
its own records (``bench/scale.py``: 100 M records x 2,048 ranks x 8 workers,
first batch in < 0.1 s and < 10 MB), ids are int32 below 2**31 records, and
``epoch_order`` is ``take(0, n)``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cloudrec.errors import ConfigError
from cloudrec.reader.bijection import FeistelPermutation, derive_keys, sort_keys

MODES = ("global", "block", "shard", "none")
_MODE_SALT = {"global": 1, "block": 2, "shard": 3, "none": 4}

DEFAULT_BLOCK_SIZE = 256
# 2 MB x 8 blocks: a 16 MB window, so a first batch waits for half the bytes that 4 MB
# blocks needed, and 6.4 distinct eighths of the dataset per batch of 64 instead of 5.1
# (bench/peers.py's 2,000 photos); requests stay >= 2 MB
DEFAULT_BLOCK_BYTES = 2 << 20
DEFAULT_WINDOW_BLOCKS = 8
DEFAULT_BUFFER_SIZE = 4096
# below this many records `global` is an exact uniform permutation (numpy's); from it on a
# keyed Feistel bijection that a worker evaluates at its own positions only
EXACT_GLOBAL_BELOW = 1 << 16
_ID_BLOCK = 1 << 20


def _columns(source: Any) -> tuple[int, Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """(n, shard, offset, length) of an int, a RecordTable or a dataset with ``.table``."""
    if isinstance(source, (int, np.integer)):
        n = int(source)
        if n < 0:
            raise ConfigError(f"number of records must be >= 0, got {n}")
        return n, None, None, None
    table = getattr(source, "table", source)
    shard = getattr(table, "shard", None)
    offset = getattr(table, "offset", None)
    length = getattr(table, "length", None)
    if shard is None or offset is None:
        raise ConfigError(
            f"epoch_order needs a record count, a RecordTable or a dataset, got {type(source).__name__}")
    shard = np.asarray(shard)
    offset = np.asarray(offset)
    if shard.shape != offset.shape or shard.ndim != 1:
        raise ConfigError("record table columns shard/offset must be 1-D arrays of equal length")
    return len(shard), shard, offset, (None if length is None else np.asarray(length))


def _in_file_order(shard: np.ndarray, offset: np.ndarray) -> bool:
    """True when rows are already sorted by (shard, offset): file order is the identity."""
    n = len(shard)
    for a in range(0, max(n - 1, 0), _ID_BLOCK):
        b = min(n, a + _ID_BLOCK + 1)
        ds = np.diff(shard[a:b].astype(np.int64))
        if np.any((ds < 0) | ((ds == 0) & (np.diff(offset[a:b].astype(np.int64)) < 0))):
            return False
    return True


class _FileOrder:
    """File position -> record id; the identity (no array) when the table is in file order."""

    def __init__(self, source: Any) -> None:
        self.n, self.shard, offset, _ = _columns(source)
        self.perm: Optional[np.ndarray] = None
        if self.shard is not None and not _in_file_order(self.shard, offset):
            self.perm = np.lexsort((offset, self.shard)).astype(np.int64, copy=False)

    def at(self, pos: np.ndarray) -> np.ndarray:
        return pos if self.perm is None else self.perm[pos]

    def shard_runs(self) -> tuple[np.ndarray, np.ndarray]:
        """(first file position, record count) of each shard present, in file order."""
        if self.shard is None or self.n == 0:
            return np.zeros(min(self.n, 1), np.int64), np.full(min(self.n, 1), self.n, np.int64)
        sh = self.shard if self.perm is None else self.shard[self.perm]
        first = np.concatenate([[0], np.flatnonzero(sh[1:] != sh[:-1]) + 1]).astype(np.int64)
        return first, np.diff(np.append(first, self.n))


def file_order(source: Any) -> np.ndarray:
    """Record ids sorted by (shard, offset): the order a sequential reader meets them."""
    base = _FileOrder(source)
    return np.arange(base.n, dtype=np.int64) if base.perm is None else base.perm


def _rng(seed: int, epoch: int, mode: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), _MODE_SALT[mode]])


def _shuffle_key(seed: int, epoch: int, mode: str) -> np.uint64:
    return derive_keys(seed, epoch, 16 + _MODE_SALT[mode], 1)[0]


class OrderPlan:
    """An epoch order evaluated lazily: ``take(a, b)`` is ``epoch_order(...)[a:b]``.

    Holds O(blocks) or O(shards) state (O(1) for ``global``); ``take`` costs
    O(b - a) plus one window or buffer at each end. Ids are int32 below 2**31 records.
    """

    def __init__(self, base: _FileOrder) -> None:
        self.base = base
        self.n = base.n
        self.dtype = np.int32 if self.n < 2 ** 31 else np.int64

    def __len__(self) -> int:
        return self.n

    def _file_positions(self, a: int, b: int) -> np.ndarray:
        return np.arange(a, b, dtype=np.int64)

    def chunk_starts(self, a: int, b: int) -> np.ndarray:
        """Positions in (a, b) where a shuffle window/buffer starts: the order is
        file-contiguous between them, so a reader cutting its look-ahead there
        never splits one window's blocks over two plans (empty: no structure)."""
        return np.zeros(0, np.int64)

    def is_chunk_start(self, p: int) -> Optional[bool]:
        """Whether position ``p`` starts a window/buffer (True at 0 and n; None: no structure,
        ``global``; always True for file order, which is contiguous anywhere)."""
        return True if type(self) is OrderPlan else None

    def take(self, a: int, b: int) -> np.ndarray:
        """Record ids at order positions [a, b)."""
        a, b = max(0, int(a)), min(self.n, int(b))
        if b <= a:
            return np.empty(0, self.dtype)
        return self.base.at(self._file_positions(a, b)).astype(self.dtype, copy=False)


class _GlobalPlan(OrderPlan):
    def __init__(self, base: _FileOrder, seed: int, epoch: int) -> None:
        super().__init__(base)
        self._perm: Optional[np.ndarray] = None
        self._feistel: Optional[FeistelPermutation] = None
        if self.n < EXACT_GLOBAL_BELOW:
            self._perm = _rng(seed, epoch, "global").permutation(self.n)
        else:
            self._feistel = FeistelPermutation(self.n, derive_keys(seed, epoch, _MODE_SALT["global"], 12))

    def _file_positions(self, a: int, b: int) -> np.ndarray:
        if self._perm is not None:
            return self._perm[a:b]
        return self._feistel(np.arange(a, b, dtype=np.int64))


class _BlockPlan(OrderPlan):
    """Blocks of ``bs`` file-contiguous records, permuted; windows of ``wb`` blocks shuffled inside."""

    def __init__(self, base: _FileOrder, seed: int, epoch: int, bs: int, wb: int, within: str) -> None:
        super().__init__(base)
        self.bs, self.wb, self.within = bs, wb, within
        self.nblocks = -(-self.n // bs)
        self.perm = _rng(seed, epoch, "block").permutation(self.nblocks)
        self.last_size = self.n - (self.nblocks - 1) * bs
        self.short = bs - self.last_size
        # the window holding the short last block is shorter; later windows start earlier
        self.short_window = int(np.flatnonzero(self.perm == self.nblocks - 1)[0]) // wb
        self.chunk = bs * wb
        self.key = _shuffle_key(seed, epoch, "block")

    def window_start(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, np.int64)
        return w * self.chunk - np.where(w > self.short_window, self.short, 0)

    def window_of(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, np.int64)
        limit = (self.short_window + 1) * self.chunk - self.short
        return np.where(p < limit, p // self.chunk, (p + self.short) // self.chunk)

    def chunk_starts(self, a: int, b: int) -> np.ndarray:
        if b - a < 2:
            return np.zeros(0, np.int64)
        w0, w1 = int(self.window_of(a)), int(self.window_of(b - 1))
        return self.window_start(np.arange(w0 + 1, w1 + 1))

    def is_chunk_start(self, p: int) -> Optional[bool]:
        return p <= 0 or p >= self.n or int(self.window_start(self.window_of(p))) == p

    def _file_positions(self, a: int, b: int) -> np.ndarray:
        w0, w1 = int(self.window_of(a)), int(self.window_of(b - 1))
        g0, g1 = w0 * self.wb, min(self.nblocks, (w1 + 1) * self.wb)
        blocks = self.perm[g0:g1]
        sizes = np.where(blocks == self.nblocks - 1, self.last_size, self.bs)
        first = np.cumsum(sizes) - sizes
        slot_block = np.repeat(np.arange(g0, g1, dtype=np.int64), sizes)
        total = int(sizes.sum())
        rel = np.arange(total, dtype=np.int64) - np.repeat(first, sizes)
        filepos = np.repeat(blocks.astype(np.int64) * self.bs, sizes) + rel
        s0 = int(self.window_start(w0))
        key = ((slot_block // self.wb) << 32) | sort_keys(np.arange(s0, s0 + total), self.key)
        idx = np.argsort(key, kind="stable")
        if self.within == "shuffle":
            out = filepos[idx]
        else:   # interleave: a random merge of the window's blocks, each kept in file order
            out = np.empty(total, np.int64)
            out[np.argsort(slot_block[idx], kind="stable")] = filepos
        return out[a - s0:b - s0]


class _ShardPlan(OrderPlan):
    """Shards permuted, then shuffled inside consecutive buffers of ``buf`` records."""

    def __init__(self, base: _FileOrder, seed: int, epoch: int, buf: int) -> None:
        super().__init__(base)
        self.buf = buf
        first, counts = base.shard_runs()
        perm = _rng(seed, epoch, "shard").permutation(len(first)) if base.shard is not None else \
            np.arange(len(first))
        self.first, self.counts = first[perm], counts[perm]
        self.seq_start = np.cumsum(self.counts) - self.counts
        self.key = _shuffle_key(seed, epoch, "shard")
        self.chunk = buf

    def chunk_starts(self, a: int, b: int) -> np.ndarray:
        return np.arange((a // self.buf + 1) * self.buf, b, self.buf, dtype=np.int64)

    def is_chunk_start(self, p: int) -> Optional[bool]:
        return p <= 0 or p >= self.n or p % self.buf == 0

    def _seq_to_file(self, s: np.ndarray) -> np.ndarray:
        j = np.searchsorted(self.seq_start, s, side="right") - 1
        return self.first[j] + (s - self.seq_start[j])

    def _file_positions(self, a: int, b: int) -> np.ndarray:
        s0 = (a // self.buf) * self.buf
        s1 = min(self.n, -(-b // self.buf) * self.buf)
        s = np.arange(s0, s1, dtype=np.int64)
        key = ((s // self.buf) << 32) | sort_keys(s, self.key)
        return self._seq_to_file(s[np.argsort(key, kind="stable")])[a - s0:b - s0]


def _block_size_for(n: int, length: Optional[np.ndarray], block_bytes: int) -> int:
    if length is None or n == 0:
        return DEFAULT_BLOCK_SIZE
    mean = float(np.mean(length))
    return max(1, int(round(block_bytes / max(mean, 1.0))))


def order_plan(source: Any, seed: int, epoch: int, mode: str = "global", *,
               block_size: Optional[int] = None, block_bytes: int = DEFAULT_BLOCK_BYTES,
               window_blocks: int = DEFAULT_WINDOW_BLOCKS, within: str = "shuffle",
               buffer_size: int = DEFAULT_BUFFER_SIZE) -> OrderPlan:
    """The order of epoch ``epoch`` as an :class:`OrderPlan` (arguments as :func:`epoch_order`)."""
    if mode not in _MODE_SALT:
        raise ConfigError(f"unknown order mode {mode!r}; choose one of {', '.join(MODES)}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    n, _, _, length = _columns(source)
    if mode == "block":
        bs = block_size if block_size is not None else _block_size_for(n, length, block_bytes)
        if bs < 1 or window_blocks < 1:
            raise ConfigError(f"block_size and window_blocks must be >= 1, got {bs}, {window_blocks}")
        if within not in ("shuffle", "interleave"):
            raise ConfigError(f"within must be 'shuffle' or 'interleave', got {within!r}")
    if mode == "shard" and buffer_size < 1:
        raise ConfigError(f"buffer_size must be >= 1, got {buffer_size}")
    base = _FileOrder(source)
    if mode == "none" or n <= 1:
        return OrderPlan(base)
    if mode == "global":
        return _GlobalPlan(base, seed, epoch)
    if mode == "block":
        return _BlockPlan(base, seed, epoch, int(bs), int(window_blocks), within)
    return _ShardPlan(base, seed, epoch, int(buffer_size))


def epoch_order(source: Any, seed: int, epoch: int, mode: str = "global", **options: Any) -> np.ndarray:
    """The record ids of epoch ``epoch`` in visiting order: a permutation of ``range(n)`` (int64).

    ``source`` is a record count, a RecordTable (``shard``/``offset`` columns) or
    a dataset with ``.table``; file contiguity is (shard, offset) order (plain
    ids for a count). Options: ``block_size`` (default ``block_bytes`` = 2 MB
    worth of records when the table has lengths, else 256), ``window_blocks``,
    ``within='interleave'`` (block mode: merges a window's blocks at random but
    keeps each block in file order), ``buffer_size`` (shard mode).
    Same arguments, same array; equal to ``order_plan(...).take(a, b)`` slice by slice.
    """
    plan = order_plan(source, seed, epoch, mode, **options)
    return plan.take(0, plan.n).astype(np.int64, copy=False)
