"""MXNet's fixed partitions and last-batch rules, as pure numpy functions chosen by name.

cloudrec's own partition (``'steps'``, :mod:`cloudrec.reader.partition`) deals
global steps of the epoch's order to ranks, so a restart may change the world
size.  MXNet's iterators instead cut the dataset into ``num_parts`` fixed parts
*before* shuffling, and each part is read on its own:

* ``'mxnet-count'``: ImageRecordIter with an `.idx`: ``ceil(N / parts)``
  records per part in file order, the last part shorter;
* ``'mxnet-bytes'``: ImageRecordIter without an `.idx`: the concatenated
  shards cut into ``ceil4(ceil(bytes / parts))``-byte spans, a record belonging
  to the span its head is in (dmlc's InputSplit);
* ``'floor'``: ImageIter: ``N // parts`` records per part, the remainder unread.

The part's epoch order is then cut into batches with one of MXNet's last-batch
rules (:data:`LAST_RULES`).  A state saved under a fixed partition only fits the
same ``num_parts`` (the parts themselves move otherwise).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np

from cloudrec.errors import ConfigError

__all__ = ["FIXED_PARTITIONS", "LAST_RULES", "fixed_partition", "fixed_batches", "rollover_carry"]


def _ceil4(n: int) -> int:
    return (n + 3) // 4 * 4


def _count_part(file_order: np.ndarray, table, num_parts: int, part: int) -> np.ndarray:
    n = len(file_order)
    step = -(-n // num_parts)
    lo, hi = part * step, min((part + 1) * step, n)
    return file_order[lo:hi] if lo < n else file_order[:0]


def _bytes_part(file_order: np.ndarray, table, num_parts: int, part: int) -> np.ndarray:
    if table is None or getattr(table, "shard_sizes", None) is None:
        raise ConfigError("the 'mxnet-bytes' partition needs a record table with shard sizes")
    sizes = np.asarray(table.shard_sizes, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    step = _ceil4(-(-int(sizes.sum()) // num_parts))
    gpos = starts[table.shard[file_order]] + table.offset[file_order]
    return file_order[(gpos >= part * step) & (gpos < (part + 1) * step)]


def _floor_part(file_order: np.ndarray, table, num_parts: int, part: int) -> np.ndarray:
    c = len(file_order) // num_parts
    return file_order[part * c:(part + 1) * c]


#: name -> f(file_order, table, num_parts, part_index) -> record ids of the part, in file order
FIXED_PARTITIONS: Dict[str, Callable[..., np.ndarray]] = {
    "mxnet-count": _count_part, "mxnet-bytes": _bytes_part, "floor": _floor_part}

#: MXNet's rules for the last partial batch of an epoch
LAST_RULES = ("pad", "pad-next", "fill", "drop", "roll_over")


def fixed_partition(name: str, file_order: np.ndarray, num_parts: int, part_index: int,
                    table=None) -> np.ndarray:
    """Record ids of part ``part_index`` of ``num_parts`` under partition ``name``."""
    if name not in FIXED_PARTITIONS:
        raise ConfigError(f"unknown partition {name!r}; choose one of "
                          f"{', '.join(['steps', *FIXED_PARTITIONS])}")
    if num_parts < 1 or not 0 <= part_index < num_parts:
        raise ConfigError(f"part_index must be in [0, num_parts), got part_index={part_index} "
                          f"num_parts={num_parts}")
    return FIXED_PARTITIONS[name](np.asarray(file_order, np.int64), table, num_parts, part_index)


def rollover_carry(order_of: Callable[[int], np.ndarray], epoch: int, batch_size: int) -> np.ndarray:
    """Records ``roll_over`` carries from epoch ``epoch - 1`` into ``epoch`` (oldest first).

    Epoch e reads ``carry(e-1) + order(e)`` in whole batches and carries the
    rest, so the carry is a pure function of the orders of the epochs before.
    """
    carry = np.zeros(0, np.int64)
    if epoch <= 0:
        return carry
    # the carry only reaches back past one epoch when an epoch is shorter than a batch
    n = len(order_of(0))
    if n == 0:
        return carry
    first = 0 if n < batch_size else epoch - 1
    if first > 0:
        left = (first * n) % batch_size  # carry length into epoch `first`
        carry = order_of(first - 1)[n - left:] if left else carry
    for e in range(first, epoch):
        seq = np.concatenate([carry, order_of(e)])
        carry = seq[len(seq) - len(seq) % batch_size:]
    return carry


def fixed_batches(order: np.ndarray, batch_size: int, last: str, *,
                  next_order: Optional[Callable[[], np.ndarray]] = None,
                  carry: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Cut one part's epoch ``order`` into batches: ``(ids, is_pad)`` of shape (batches * B,).

    ``last``: ``'pad'`` fills the last batch from the start of this order
    (ImageIter), ``'pad-next'`` from the next epoch's order (ImageRecordIter's
    ``round_batch``; ``next_order`` gives it), ``'fill'`` with id -1 (its
    ``round_batch=False``), ``'drop'`` discards it, ``'roll_over'`` prepends
    ``carry`` and leaves the rest for the next epoch.
    """
    if last not in LAST_RULES:
        raise ConfigError(f"unknown last-batch rule {last!r}; choose one of {', '.join(LAST_RULES)}")
    order = np.asarray(order, np.int64)
    if last == "roll_over" and carry is not None and len(carry):
        order = np.concatenate([np.asarray(carry, np.int64), order])
    full, rest = divmod(len(order), batch_size)
    if rest == 0 or last in ("drop", "roll_over"):
        ids = order[:full * batch_size]
        return ids, np.zeros(len(ids), bool)
    pad = batch_size - rest
    if last == "fill":
        filler = np.full(pad, -1, np.int64)
    else:
        src = next_order() if last == "pad-next" and next_order is not None else order
        if len(src) == 0:
            raise ConfigError("cannot pad an empty epoch")
        filler = np.resize(src, pad)
    ids = np.concatenate([order, filler])
    is_pad = np.zeros(len(ids), bool)
    is_pad[len(order):] = True
    return ids, is_pad
