"""Epoch orders: which record comes when, as a pure function of (seed, epoch, mode).

Every rank computes the same order from the same (seed, epoch) without talking
to the others, and a restart recomputes it exactly. Modes trade shuffle
quality against how sequential the reads are (figures from ``bench/orders.py``,
N = 100,000 records in 8 shards, block_size 256, window_blocks 8,
buffer_size 4096; "runs" is the mean length of runs of file-adjacent records
in the order, "reqs/1k" the byte-range requests per 1,000 records a planner
needs when it looks 2,048 records ahead and merges adjacent records):

(table filled in from bench/orders.py)

(|disp|/N: mean |position - file position| / N, 1/3 for a uniform
permutation; rho: rank correlation with file order, 0 for uniform.)
``global`` is a uniform permutation: right on local disk or a cached shard,
but one GET per record from object storage. ``block`` permutes blocks of
``block_size`` file-contiguous records and shuffles records inside windows of
``window_blocks`` blocks: globally as well mixed as ``global`` by both
measures, yet a look-ahead reader sees only ``window_blocks`` long sequential
runs per window. Its weakness is local: two records from the same block land
within one window of each other (about ``block_size * window_blocks``
positions), so neighbouring batches are correlated. ``shard`` permutes whole
shards and shuffles inside a buffer of ``buffer_size`` records: the fewest
requests, but batches draw from one or two shards at a time. ``none`` is file
order (no shuffle), for evaluation and MXNet-compatible unshuffled reads.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cloudrec.errors import ConfigError

MODES = ("global", "block", "shard", "none")
_MODE_SALT = {"global": 1, "block": 2, "shard": 3, "none": 4}

DEFAULT_BLOCK_SIZE = 256
DEFAULT_BLOCK_BYTES = 8 << 20
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
    return ids[np.lexsort((rng.random(len(ids)), group))]


def _block_order(base: np.ndarray, rng: np.random.Generator, block_size: int,
                 window_blocks: int) -> np.ndarray:
    n = len(base)
    nblocks = -(-n // block_size)
    perm = rng.permutation(nblocks)
    # record positions of the permuted blocks, concatenated
    starts = perm * block_size
    sizes = np.minimum(block_size, n - starts)
    block_of_slot = np.repeat(np.arange(nblocks), sizes)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    within = np.arange(n) - first
    pos = np.repeat(starts, sizes) + within
    window = block_of_slot // window_blocks
    return _shuffle_within_groups(base[pos], window, rng)


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
                window_blocks: int = DEFAULT_WINDOW_BLOCKS,
                buffer_size: int = DEFAULT_BUFFER_SIZE) -> np.ndarray:
    """The record ids of epoch ``epoch`` in visiting order: a permutation of ``range(n)``.

    ``source`` is a record count, a RecordTable (``shard``/``offset`` columns) or
    a dataset with ``.table``; file contiguity is (shard, offset) order (plain
    ids for a count). ``block_size`` defaults to ``block_bytes`` worth of records
    when the table has lengths, else 256. Same arguments, same array.
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
        return _block_order(base, rng, int(bs), int(window_blocks))
    if buffer_size < 1:
        raise ConfigError(f"buffer_size must be >= 1, got {buffer_size}")
    return _shard_order(base, shard, rng, int(buffer_size))
