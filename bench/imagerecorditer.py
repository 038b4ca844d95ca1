"""Benchmark: ImageRecordIter images/s vs plain cv2 loops over the same records, same run.

Dataset: photo-like JPEGs made from the real sample photos shipped in PyPI packages
(``cloudrec.tools.photos``; 300-600 px, plus a few 1000-2000 px), packed pass-through
into one `.rec`/`.idx`.  Settings as the issue asks: data_shape=(3,224,224), resize=256,
rand_crop, rand_mirror, mean/std, batch 64.

Baselines, measured in the same run over the same record payloads held in memory:

* ``decode``: ``cv2.imdecode`` on a thread pool of T threads (the decode ceiling);
* ``decode+resize``: a single-threaded ``cv2.imdecode`` + shorter-side resize loop.

Prints images/s and the ratios.  Measured on the 2-core dev box (load ~2 from other
jobs), 2000 photos of 44 KB mean, ``--repeat 4``:

    threads  cv2.imdecode ceiling  ImageRecordIter (ratio)  decode_reduce (ratio)  MXNet 1.9.1*
    1        1433 img/s            799 img/s (0.55)         989 img/s (0.69)       388 img/s
    2        2525 img/s            1230 img/s (0.50)        1524 img/s (0.57)      722 img/s

    * MXNet's C++ ImageRecordIter, same settings, measured on this machine (issue 5).

The gap to the ceiling is the work a decode loop does not do: the shorter-side resize
(~30 % of a decode here), the float normalisation write (~15 %), Python plumbing (~5 %).

Usage::

    .venv/bin/python bench/imagerecorditer.py [--n 2000] [--threads 1 2] [--workdir DIR]
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

from cloudrec.iterators import ImageRecordIter  # noqa: E402


def bench_decode_resize(payloads: List[bytes], short: int = 256) -> float:
    t0 = time.perf_counter()
    for b in payloads:
        img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        size = (short, short * h // w) if h > w else (short * w // h, short)
        cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    return len(payloads) / (time.perf_counter() - t0)


def bench_iter(rec: str, threads: int, **extra) -> float:
    kw = dict(path_imgrec=rec, path_imgidx=rec[:-4] + ".idx", data_shape=(3, 224, 224),
              resize=256, rand_crop=True, rand_mirror=True, batch_size=64,
              mean_r=123.68, mean_g=116.779, mean_b=103.939, std_r=58.395, std_g=57.12,
              std_b=57.375, preprocess_threads=threads, prefetch_buffer=4, shuffle=True)
    kw.update(extra)
    with ImageRecordIter(**kw) as it:
        return epoch_rate(it, close=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3, help="rounds (baseline and iterator alternate)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                      "cloudrec_bench_iri"))
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cv2.setNumThreads(1)  # one image per thread, as in the iterator; no nested pools
    rec = build_dataset(a.workdir, a.n)
    payloads = load_payloads(rec)
    mb = sum(len(p) for p in payloads) / len(payloads) / 1e3
    print(f"dataset: {len(payloads)} JPEG records, mean {mb:.1f} KB, {rec}")
    # baseline and iterator alternate inside each round, so that the load other processes put
    # on the machine hits both alike; ratios are per round, the median is reported
    med = lambda xs: float(np.median(xs))  # noqa: E731
    dr = max(bench_decode_resize(payloads) for _ in range(a.repeat))
    print(f"baseline single-thread cv2 decode+resize loop: {dr:8.0f} img/s (best of {a.repeat})")
    for t in a.threads:
        rows = []
        for _ in range(a.repeat):
            c = bench_decode(payloads, t)
            e = bench_iter(rec, t)
            f = bench_iter(rec, t, decode_reduce=True)
            c2 = bench_decode(payloads, t)
            rows.append((c, e, f, c2))
        ce = [2 * e / (c + c2) for c, e, f, c2 in rows]
        cf = [2 * f / (c + c2) for c, e, f, c2 in rows]
        c_best = max(max(r[0], r[3]) for r in rows)
        e_best, f_best = max(r[1] for r in rows), max(r[2] for r in rows)
        print(f"threads={t}: cv2.imdecode ceiling {c_best:6.0f} img/s | ImageRecordIter "
              f"{e_best:6.0f} img/s, ratio {med(ce):.2f} of ceiling (rounds: "
              f"{', '.join(f'{x:.2f}' for x in ce)}), {e_best / dr:.2f} x decode+resize loop | "
              f"decode_reduce {f_best:6.0f} img/s, ratio {med(cf):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
