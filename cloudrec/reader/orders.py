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
``block_size`` file-contiguous records (default: ``block_bytes`` = 4 MB
worth) and shuffles records inside windows of ``window_blocks`` blocks:
globally near-uniform, 40x fewer requests than ``global``; the price is
local: records of one block stay within a window (~32 MB) of each other, so
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
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cloudrec.errors import ConfigError

MODES = ("global", "block", "shard", "none")
_MODE_SALT = {"global": 1, "block": 2, "shard": 3, "none": 4}

DEFAULT_BLOCK_SIZE = 256
DEFAULT_BLOCK_BYTES = 4 << 20
DEFAULT_WINDOW_BLOCKS = 8
DEFAULT_BUFFER_SIZE = 4096


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


def file_order(source: Any) -> np.ndarray:
    """Record ids sorted by (shard, offset): the order a sequential reader meets them."""
    n, shard, offset, _ = _columns(source)
    if shard is None:
        return np.arange(n, dtype=np.int64)
    return np.lexsort((offset, shard)).astype(np.int64, copy=False)


def _rng(seed: int, epoch: int, mode: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), _MODE_SALT[mode]])


def _shuffle_within_groups(ids: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shuffle ``ids`` inside each run of equal, non-decreasing ``group`` labels (vectorised)."""
    return ids[_group_shuffle_index(group, rng)]


def _group_shuffle_index(group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices that shuffle within groups: one stable sort on (group, 32 random bits)."""
    key = (np.asarray(group, np.int64) << 32) | rng.integers(0, 1 << 32, len(group), dtype=np.int64)
    return np.argsort(key, kind="stable")


def _block_order(base: np.ndarray, rng: np.random.Generator, block_size: int,
                 window_blocks: int, within: str) -> np.ndarray:
    n = len(base)
    nblocks = -(-n // block_size)
    perm = rng.permutation(nblocks)
    # record positions of the permuted blocks, concatenated
    starts = perm * block_size
    sizes = np.minimum(block_size, n - starts)
    block_of_slot = np.repeat(np.arange(nblocks), sizes)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    rel = np.arange(n) - first
    pos = np.repeat(starts, sizes) + rel
    window = block_of_slot // window_blocks
    records = base[pos]                      # window by window, block by block, file order
    if within == "shuffle":
        return _shuffle_within_groups(records, window, rng)
    # interleave: a uniformly random merge of the window's blocks, each kept in file order
    labels = block_of_slot[_group_shuffle_index(window, rng)]
    out = np.empty(n, np.int64)
    out[np.argsort(labels, kind="stable")] = records
    return out


def _shard_order(base: np.ndarray, shard: Optional[np.ndarray], rng: np.random.Generator,
                 buffer_size: int) -> np.ndarray:
    n = len(base)
    if shard is None or n == 0:
        seq = base
    else:
        sh = shard[base]
        uniq, first, counts = np.unique(sh, return_index=True, return_counts=True)
        perm = rng.permutation(len(uniq))
        starts, sizes = first[perm], counts[perm]
        firsts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        seq = base[np.repeat(starts, sizes) + (np.arange(n) - firsts)]
    return _shuffle_within_groups(seq, np.arange(n) // buffer_size, rng)


def _block_size_for(n: int, length: Optional[np.ndarray], block_bytes: int) -> int:
    if length is None or n == 0:
        return DEFAULT_BLOCK_SIZE
    mean = float(np.mean(length))
    return max(1, int(round(block_bytes / max(mean, 1.0))))


def epoch_order(source: Any, seed: int, epoch: int, mode: str = "global", *,
                block_size: Optional[int] = None, block_bytes: int = DEFAULT_BLOCK_BYTES,
                window_blocks: int = DEFAULT_WINDOW_BLOCKS, within: str = "shuffle",
                buffer_size: int = DEFAULT_BUFFER_SIZE) -> np.ndarray:
    """The record ids of epoch ``epoch`` in visiting order: a permutation of ``range(n)``.

    ``source`` is a record count, a RecordTable (``shard``/``offset`` columns) or
    a dataset with ``.table``; file contiguity is (shard, offset) order (plain
    ids for a count). ``block_size`` defaults to ``block_bytes`` worth of records
    when the table has lengths, else 256. ``within='interleave'`` (block mode)
    merges a window's blocks at random but keeps each block in file order.
    Same arguments, same array.
    """
    if mode not in _MODE_SALT:
        raise ConfigError(f"unknown order mode {mode!r}; choose one of {', '.join(MODES)}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    n, shard, _, length = _columns(source)
    base = file_order(source)
    if mode == "none" or n <= 1:
        return base
    rng = _rng(seed, epoch, mode)
    if mode == "global":
        return base[rng.permutation(n)]
    if mode == "block":
        bs = block_size if block_size is not None else _block_size_for(n, length, block_bytes)
        if bs < 1 or window_blocks < 1:
            raise ConfigError(f"block_size and window_blocks must be >= 1, got {bs}, {window_blocks}")
        if within not in ("shuffle", "interleave"):
            raise ConfigError(f"within must be 'shuffle' or 'interleave', got {within!r}")
        return _block_order(base, rng, int(bs), int(window_blocks), within)
    if buffer_size < 1:
        raise ConfigError(f"buffer_size must be >= 1, got {buffer_size}")
    return _shard_order(base, shard, rng, int(buffer_size))
