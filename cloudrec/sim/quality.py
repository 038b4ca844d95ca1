"""Shuffle quality of what the ranks actually receive.

``distinct_fractions``: cut the dataset in file order into F equal parts; a
batch's score is how many parts its records come from (a uniform shuffle
gives ``F * (1 - (1 - 1/F) ** B)``, ~8.0 for F = 8 and B >= 64; file order 1).
``displacement``: mean |position in the epoch - position in file order| / N
(uniform 1/3, file order 0).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from cloudrec.reader.orders import file_order


def file_rank(table) -> np.ndarray:
    """Position of each record id in file (shard, offset) order."""
    fo = file_order(table)
    rank = np.empty(len(fo), np.int64)
    rank[fo] = np.arange(len(fo))
    return rank


def uniform_fractions(fractions: int, batch: int) -> float:
    return float(fractions * (1 - (1 - 1 / fractions) ** batch))


def distinct_fractions(batches: List[np.ndarray], rank: np.ndarray, fractions: int,
                       batch_size: int) -> float:
    """Mean number of dataset fractions per full batch (``batches``: each a stream's ids)."""
    n = len(rank)
    rows = [b[: len(b) // batch_size * batch_size] for b in batches]
    ids = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    if ids.size == 0 or n == 0:
        return 0.0
    part = np.sort((rank[ids] * fractions // n).reshape(-1, batch_size), axis=1)
    return float(np.mean(1 + np.count_nonzero(np.diff(part, axis=1), axis=1)))


def displacement(pos: np.ndarray, ids: np.ndarray, rank: np.ndarray) -> float:
    """Mean |epoch position - file position| / N over the given (position, id) pairs."""
    n = len(rank)
    if n == 0 or len(ids) == 0:
        return 0.0
    return float(np.abs(pos - rank[ids]).mean() / n)


def quality(pos: np.ndarray, ids: np.ndarray, batches: List[np.ndarray], table, fractions: int,
            batch_size: int) -> Dict[str, float]:
    """Shuffle quality: ``batches`` are streams' ids; (``pos``, ``ids``) sample the order."""
    rank = file_rank(table)
    return {"distinct_fractions": distinct_fractions(batches, rank, fractions, batch_size),
            "distinct_fractions_uniform": uniform_fractions(fractions, batch_size),
            "fractions": fractions, "displacement": displacement(pos, ids, rank),
            "displacement_sampled": bool(len(ids) < len(rank)), "displacement_uniform": 1 / 3}
