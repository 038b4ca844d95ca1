"""The generator Gluon transforms and samplers draw from.

MXNet's Gluon draws from global state, so forked DataLoader workers repeat
each other's augmentations unless reseeded.  Here every batch gets its own
seed, drawn in the main process in sampler order, and the worker (process,
thread or the main process itself) draws that batch's randomness from a
generator seeded with it: the same ``mx.random.seed`` gives the same batches
whatever ``num_workers`` is.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

import numpy as np

__all__ = ["seed", "get", "using", "next_seed"]

_main = np.random.default_rng()
_local = threading.local()


def seed(value: Optional[int]) -> None:
    """Reseed the main generator (``mx.random.seed`` calls this)."""
    global _main
    _main = np.random.default_rng(value)


def get() -> np.random.Generator:
    """The generator in force: a batch's own inside :func:`using`, else the main one."""
    return getattr(_local, "gen", None) or _main


def next_seed() -> int:
    """A fresh 63-bit seed from the main generator (one per batch)."""
    return int(_main.integers(0, 2 ** 63 - 1))


@contextlib.contextmanager
def using(batch_seed: int) -> Iterator[np.random.Generator]:
    """Draw from a generator seeded with ``batch_seed`` in this thread until the block ends."""
    prev = getattr(_local, "gen", None)
    _local.gen = np.random.default_rng(batch_seed)
    try:
        yield _local.gen
    finally:
        _local.gen = prev
