"""Keyed permutations and hashes over record positions, evaluated only where asked.

A rank x worker of a 100 M record epoch needs the order at ~6,000 positions,
not all of it: a keyed Feistel network over [0, n) (cycle-walking into the
range) gives order position -> record in O(1) memory per position, and a
keyed 64-bit mixer gives the random sort keys that shuffle a window or buffer
of records without a random-number stream that would have to be replayed
from the start of the epoch. Both are pure functions of (key, position).
"""
from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ROUNDS = 6


def derive_keys(seed: int, epoch: int, salt: int, count: int) -> np.ndarray:
    """``count`` independent 64-bit keys for (seed, epoch, salt)."""
    return np.random.SeedSequence([int(seed), int(epoch), int(salt), 0x5EED]).generate_state(count, np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose output bits all depend on all input bits."""
    z = np.asarray(x, np.uint64).copy()
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def sort_keys(positions: np.ndarray, key: np.uint64) -> np.ndarray:
    """32-bit random sort keys of ``positions`` (int64), the same wherever they are computed."""
    with np.errstate(over="ignore"):
        h = mix64(np.asarray(positions, np.int64).astype(np.uint64) ^ np.uint64(key))
    return (h >> np.uint64(32)).astype(np.int64)


class FeistelPermutation:
    """A keyed permutation of ``range(n)``: ``self(positions)`` -> images, vectorised.

    Balanced Feistel network on 2h bits (2**(2h) >= n, so fewer than 4 values
    per valid one), six rounds; round i maps the right half r to the top h bits
    of ``(r ^ k_i) * m_i`` (keyed multiply-shift hashing: one multiply per round,
    so the whole 10 M order costs about as much as numpy's permutation).
    Values that land outside [0, n) walk the cycle until they come back in.
    """

    def __init__(self, n: int, keys: np.ndarray) -> None:
        if n < 1:
            raise ValueError("FeistelPermutation needs n >= 1")
        self.n = int(n)
        half = max(1, (max(self.n - 1, 1).bit_length() + 1) // 2)
        self.half = half
        self.mask = np.uint64((1 << half) - 1)
        keys = np.asarray(keys, np.uint64)
        if len(keys) < 2 * _ROUNDS:
            raise ValueError(f"FeistelPermutation needs {2 * _ROUNDS} keys")
        self.keys = keys[:_ROUNDS]
        self.mults = keys[_ROUNDS:2 * _ROUNDS] | np.uint64(1)      # odd multipliers
        self.shift = np.uint64(64 - half)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = x >> h, x & self.mask
        with np.errstate(over="ignore"):
            for k, m in zip(self.keys, self.mults):
                f = right ^ k
                f *= m
                f >>= self.shift
                f ^= left
                left, right = right, f
        return (left << h) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        x = np.asarray(positions, np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.n):
            raise ValueError(f"positions must be in [0, {self.n})")
        y = self._encrypt(x.astype(np.uint64))
        out = y.astype(np.int64)
        todo = np.flatnonzero(out >= self.n)
        while todo.size:                      # cycle-walking: bounded by the cycle lengths
            y = self._encrypt(out[todo].astype(np.uint64)).astype(np.int64)
            out[todo] = y
            todo = todo[y >= self.n]
        return out
