"""keyed_generator: one re-keyed Generator per thread, deterministic in the sample's key."""
from __future__ import annotations

import threading

import numpy as np

from cloudrec.iterators.sample_rng import keyed_generator


def _draws(key, n=4):
    g = keyed_generator(key)
    return [int(g.integers(0, 1 << 30)) for _ in range(n)] + [g.random()]


def test_same_key_same_draws_whatever_came_before():
    first = _draws((7, 0, 0, 12))
    keyed_generator((7, 0, 0, 13)).random(1000)  # use the thread's generator for another key
    assert _draws((7, 0, 0, 12)) == first


def test_every_key_component_changes_the_stream():
    base = (7, 1, 0, 12)
    seen = {tuple(_draws(base))}
    for i in range(4):
        k = list(base)
        k[i] += 1
        seen.add(tuple(_draws(tuple(k))))
    assert len(seen) == 5
    assert _draws((1 << 62, 3, 2, (1 << 40) + 5)) != _draws((1 << 62, 3, 2, (1 << 40) + 6))


def test_same_draws_on_another_thread():
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("x", _draws((3, 2, 1, 0))))
    t.start()
    t.join()
    assert got["x"] == _draws((3, 2, 1, 0))


def test_one_generator_per_thread_and_uniform_first_draws():
    assert keyed_generator((0, 0, 0, 0)) is keyed_generator((0, 0, 0, 1))
    first = np.array([keyed_generator((5, 0, 0, p)).random() for p in range(4000)])
    assert len(np.unique(first)) == 4000
    hist = np.histogram(first, bins=10, range=(0, 1))[0]
    assert hist.min() > 320 and hist.max() < 480  # 400 expected per bin
    assert abs(float(np.corrcoef(first[:-1], first[1:])[0, 1])) < 0.06
