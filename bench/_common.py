"""What the iterator benchmarks share: the photo dataset, its payloads, the decode baseline
and the images/s of one pass over an iterator.

Benchmarks run as ``python bench/X.py``; they put this folder on ``sys.path`` and
``from _common import ...``.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List

import cv2
import numpy as np

from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack, unpack


def build_dataset(workdir: str, n: int) -> str:
    """Make (once) ``n`` photo-like JPEGs (5% of them 1000-2000 px) and pack them
    pass-through into ``workdir/photos{n}.rec`` + ``.idx``; return the .rec path."""
    from cloudrec.tools.photos import PhotoSpec, make_photos
    rec = os.path.join(workdir, f"photos{n}.rec")
    if os.path.exists(rec) and os.path.exists(rec[:-4] + ".idx"):
        return rec
    n_big = max(1, n // 20)
    parts = [("normal", PhotoSpec(n=n - n_big, classes=10, min_side=300, max_side=600,
                                   png_frac=0.0, gray_frac=0.05, seed=1)),
             ("big", PhotoSpec(n=n_big, classes=10, min_side=1000, max_side=2000,
                               png_frac=0.0, gray_frac=0.0, seed=2))]
    files: List[tuple] = []
    for name, spec in parts:
        folder = os.path.join(workdir, "img_" + name)
        rels = make_photos(folder, spec, workers=2)
        files += [(os.path.join(folder, r), i % spec.classes) for i, r in enumerate(rels)]
    order = np.random.default_rng(0).permutation(len(files))
    w = MXIndexedRecordIO(rec[:-4] + ".idx", rec + ".tmp", "w")
    for k, i in enumerate(order.tolist()):
        path, label = files[i]
        with open(path, "rb") as f:
            w.write_idx(k, pack(IRHeader(0, float(label), k, 0), f.read()))
    w.close()
    os.replace(rec + ".tmp", rec)
    return rec


def load_payloads(rec: str) -> List[bytes]:
    """The image bytes of every record of ``rec`` (headers removed), in key order."""
    r = MXIndexedRecordIO(rec[:-4] + ".idx", rec, "r")
    try:
        return [unpack(r.read_idx(k))[1] for k in r.keys]
    finally:
        r.close()


def bench_decode(payloads: List[bytes], threads: int, pool_for_one: bool = False) -> float:
    """Baseline images/s: ``cv2.imdecode`` of every payload on a pool of ``threads`` threads
    (with one thread, a plain loop in the calling thread unless ``pool_for_one``)."""
    def dec(b: bytes) -> int:
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR).shape[0]
    t0 = time.perf_counter()
    if threads == 1 and not pool_for_one:
        for b in payloads:
            dec(b)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(dec, payloads, chunksize=8))
    return len(payloads) / (time.perf_counter() - t0)


def epoch_rate(it: Any, close: bool = True) -> float:
    """Images/s of one pass over the data iterator ``it`` (padding not counted);
    closes ``it`` afterwards unless ``close`` is False."""
    try:
        n = 0
        t0 = time.perf_counter()
        for b in it:
            n += b.data[0].shape[0] - b.pad
        return n / (time.perf_counter() - t0)
    finally:
        if close:
            it.close()
