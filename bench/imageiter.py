"""Benchmark: ImageIter images/s vs a plain threaded ``cv2.imdecode`` loop, same records, same run.

Dataset: photo-like JPEGs made from the sample photos shipped in PyPI packages
(``cloudrec.tools.photos``, 300-600 px plus a few 1000-2000 px), packed pass-through
into one local `.rec`/`.idx` (the same maker as bench/image_record_iter.py).
Iterator settings as the issue asks: data_shape=(3,224,224),
CreateAugmenter(resize=256, rand_crop, rand_mirror, mean, std), batch 64.

Baseline, measured in the same run over the same payloads held in memory:
``cv2.imdecode`` on a thread pool of T threads (decode only: the ceiling).
Also a serial loop (decode + the same augmenters in the calling thread), which
is how MXNet's ImageIter worked (apache/mxnet#11165).  Usage::

    .venv/bin/python bench/imageiter.py [--n 1000] [--threads 1 2] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import cv2

from concurrent.futures import ThreadPoolExecutor
from typing import List

import numpy as np

from cloudrec.image import ImageIter
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack, unpack


def build_dataset(workdir: str, n: int) -> str:
    """Make (once) ``n`` photo-like JPEGs (5% of them 1000-2000 px) and pack them."""
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
    r = MXIndexedRecordIO(rec[:-4] + ".idx", rec, "r")
    try:
        return [unpack(r.read_idx(k))[1] for k in r.keys]
    finally:
        r.close()


def bench_decode(payloads: List[bytes], threads: int) -> float:
    """Baseline: cv2.imdecode of every payload on a pool of ``threads`` threads."""
    def dec(b: bytes) -> int:
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR).shape[0]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(dec, payloads, chunksize=8))
    return len(payloads) / (time.perf_counter() - t0)


def bench_serial(payloads: List[bytes]) -> float:
    """MXNet's ImageIter model: decode + the same augmenters in the calling thread."""
    from cloudrec.image import CreateAugmenter, imdecode
    augs = CreateAugmenter((3, 224, 224), resize=256, rand_crop=True, rand_mirror=True,
                           mean=True, std=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for b in payloads:
        x = imdecode(b)
        for a in augs:
            x = a(x, rng)
    return len(payloads) / (time.perf_counter() - t0)


def bench_imageiter(rec: str, threads: int, inter_method: int = 2) -> float:
    it = ImageIter(64, (3, 224, 224), path_imgrec=rec, path_imgidx=rec[:-4] + ".idx",
                   shuffle=True, seed=0, num_threads=threads, resize=256, rand_crop=True,
                   rand_mirror=True, mean=True, std=True, inter_method=inter_method)
    try:
        n = 0
        t0 = time.perf_counter()
        for b in it:
            n += b.data[0].shape[0] - b.pad
        return n / (time.perf_counter() - t0)
    finally:
        it.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=2, help="best of R runs")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "cloudrec_bench_ii"))
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cv2.setNumThreads(1)  # one image per thread, as in the iterator
    rec = build_dataset(a.workdir, a.n)
    payloads = load_payloads(rec)
    kb = sum(len(p) for p in payloads) / len(payloads) / 1e3
    print(f"dataset: {len(payloads)} JPEG records, mean {kb:.1f} KB, {rec}")
    serial = max(bench_serial(payloads) for _ in range(a.repeat))
    print(f"serial decode+augment loop (MXNet ImageIter's model): {serial:7.0f} img/s")
    for t in a.threads:
        runs = {"base": [], "cubic": [], "linear": []}
        for _ in range(a.repeat):  # interleaved, so a noisy neighbour hits all alike
            runs["base"].append(bench_decode(payloads, t))
            runs["cubic"].append(bench_imageiter(rec, t))
            runs["linear"].append(bench_imageiter(rec, t, inter_method=1))
        base, ii, lin = (max(runs[k]) for k in ("base", "cubic", "linear"))
        print(f"threads={t}: cv2.imdecode loop {base:7.0f} img/s | ImageIter (bicubic, "
              f"MXNet default) {ii:7.0f} img/s = {ii / base:.2f} x decode loop, "
              f"{ii / serial:.2f} x serial | ImageIter (bilinear) {lin:7.0f} img/s = "
              f"{lin / base:.2f} x decode loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
