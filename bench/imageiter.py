"""Benchmark: ImageIter images/s vs a plain threaded ``cv2.imdecode`` loop, same records, same run.

Dataset: photo-like JPEGs made from the sample photos shipped in PyPI packages
(``cloudrec.tools.photos``, 300-600 px plus a few 1000-2000 px), packed pass-through
into one local `.rec`/`.idx` (bench/_common.py, shared with bench/imagerecorditer.py).
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
from typing import List

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_decode, build_dataset, epoch_rate, load_payloads  # noqa: E402

from cloudrec.image import ImageIter  # noqa: E402


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
    return epoch_rate(it)


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
            runs["base"].append(bench_decode(payloads, t, pool_for_one=True))
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
