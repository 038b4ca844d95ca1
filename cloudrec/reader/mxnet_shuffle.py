"""MXNet ImageRecordIter's exact epoch permutations (``shuffle=True``).

MXNet seeds one ``std::mt19937`` with ``111 + seed`` and, at every epoch
start, shuffles the identity permutation of the partition with
``std::shuffle`` (libstdc++ of the MXNet 1.9.1 wheels: one
``uniform_int_distribution(0, i)`` draw per position, by rejection with
``scaling = (2^32 - 1) // (i + 1)``).  The generator is not re-seeded, so
epoch ``e`` is the ``e+1``-th shuffle.  Verified against the
``iri_shuffle_seed*`` fixtures.  Draws are generated in bulk with numpy's
MT19937 (same stream as ``init_genrand``); only the swaps loop in Python.
"""
from __future__ import annotations

import threading
from typing import Dict, Tuple

import numpy as np

__all__ = ["MXNetShuffle"]

_URNG_RANGE = (1 << 32) - 1


def _draw_positions(bg: np.random.MT19937, n: int) -> np.ndarray:
    """Swap targets j_i ~ U{0..i} for i = 1..n-1, consuming the stream like libstdc++."""
    m = n - 1
    if m <= 0:
        return np.zeros(0, np.int64)
    uerange = np.arange(2, n + 1, dtype=np.uint64)           # i + 1
    scaling = np.uint64(_URNG_RANGE) // uerange
    past = uerange * scaling
    out = np.empty(m, np.int64)
    pos = 0
    stream = np.zeros(0, np.uint64)
    while pos < m:
        if stream.size == 0:
            stream = bg.random_raw(m - pos).astype(np.uint64)
        k = min(stream.size, m - pos)
        acc = stream[:k] < past[pos:pos + k]
        if acc.all():
            out[pos:pos + k] = stream[:k] // scaling[pos:pos + k]
            pos += k
            stream = stream[k:]
            continue
        r = int(np.argmin(acc))
        out[pos:pos + r] = stream[:r] // scaling[pos:pos + r]
        pos += r
        stream = stream[r + 1:]                              # the rejected draw is dropped
    return out


def _apply(n: int, js: np.ndarray) -> np.ndarray:
    perm = list(range(n))
    for i, j in enumerate(js.tolist(), 1):
        perm[i], perm[j] = perm[j], perm[i]
    return np.asarray(perm, dtype=np.int64)


class MXNetShuffle:
    """Permutation of ``range(n)`` for each epoch, as MXNet draws them for ``seed``.

    Generator states are cached per epoch so walking epochs in order costs one
    shuffle each; jumping ahead replays the skipped draws in bulk.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = int(n), int(seed)
        self._states: Dict[int, dict] = {}
        self._lock = threading.Lock()
        bg = np.random.MT19937()
        bg._legacy_seeding(111 + self.seed)
        self._states[0] = bg.state

    def __getstate__(self) -> dict:
        """Picklable (DataLoader workers get a copy): the lock is made anew."""
        with self._lock:
            return {"n": self.n, "seed": self.seed, "_states": dict(self._states)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _state_before(self, epoch: int) -> Tuple[np.random.MT19937, int]:
        known = max(e for e in self._states if e <= epoch)
        bg = np.random.MT19937()
        bg.state = self._states[known]
        return bg, known

    def permutation(self, epoch: int) -> np.ndarray:
        """The order MXNet reads the partition's records in during ``epoch`` (0-based)."""
        if epoch < 0:
            raise ValueError("epoch must be >= 0")
        with self._lock:
            bg, e = self._state_before(epoch)
            while e < epoch:
                _draw_positions(bg, self.n)
                e += 1
                self._states[e] = bg.state
            js = _draw_positions(bg, self.n)
            self._states[epoch + 1] = bg.state
            if len(self._states) > 64:  # keep memory flat over long runs
                for old in sorted(self._states)[:-32]:
                    if old != 0:
                        del self._states[old]
        return _apply(self.n, js)
