"""Benchmark: ImageDetIter images/s vs ImageIter and a threaded ``cv2.imdecode`` loop, same run.

Dataset: the photo-like JPEGs of bench/_common.py, re-packed with a random
detection label per image (1-8 boxes, B = 6) into a local `.rec`/`.idx`.  Measured
(best of R runs, batch 32, data_shape (3, 300, 300), T threads):

* baseline: ``cv2.imdecode`` on a pool of T threads over the payloads in memory;
* ImageIter with ``ForceResizeAug(300x300) + CastAug`` over the same images packed with a
  scalar label (what detection does, minus the labels);
* ImageDetIter with the default augmenters (force resize + cast): the label overhead;
* ImageDetIter with SSD-style augmentation (rand_crop 0.5, rand_pad 0.5, mirror, mean/std).

Usage::

    .venv/bin/python bench/det_iter.py [--n 500] [--threads 1 2] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (bench_decode, build_dataset, epoch_rate, figure,  # noqa: E402
                     load_payloads, write_result)

from cloudrec.image import CastAug, ForceResizeAug, ImageDetIter, ImageIter  # noqa: E402
from cloudrec.image.det_labels import make_det_label  # noqa: E402
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack  # noqa: E402

BATCH, SHAPE = 32, (3, 300, 300)


def build_det(workdir: str, n: int) -> str:
    """The photo payloads with random detection labels; returns the .rec path."""
    rec = os.path.join(workdir, f"det{n}.rec")
    if os.path.exists(rec) and os.path.exists(rec[:-4] + ".idx"):
        return rec
    payloads = load_payloads(build_dataset(workdir, n))
    rng = np.random.default_rng(0)
    w = MXIndexedRecordIO(rec[:-4] + ".idx", rec + ".tmp", "w")
    for k, p in enumerate(payloads):
        m = int(rng.integers(1, 9))
        lo = rng.uniform(0, 0.6, (m, 2))
        hi = lo + rng.uniform(0.05, 0.4, (m, 2))
        objs = np.column_stack([rng.integers(0, 20, m), lo, np.minimum(hi, 1.0),
                                np.zeros(m)]).astype(np.float32)
        w.write_idx(k, pack(IRHeader(0, make_det_label(objs), k, 0), p))
    w.close()
    os.replace(rec + ".tmp", rec)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=2, help="best of R runs")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "cloudrec_bench_ii"))
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cv2.setNumThreads(1)
    rec = build_det(a.workdir, a.n)
    plain = build_dataset(a.workdir, a.n)  # the same images with a scalar label, same order
    idx = rec[:-4] + ".idx"
    payloads = load_payloads(rec)
    print(f"dataset: {len(payloads)} JPEG records with detection labels, {rec}")
    best = lambda f: max(f() for _ in range(a.repeat))  # noqa: E731
    measured, figures = {}, []
    for t in a.threads:
        ceiling = best(lambda: bench_decode(payloads, t))
        ii = best(lambda: epoch_rate(ImageIter(
            BATCH, SHAPE, path_imgrec=plain, path_imgidx=plain[:-4] + ".idx", shuffle=True,
            seed=0, num_threads=t, label_width=1,
            aug_list=[ForceResizeAug((300, 300), 2), CastAug()], dtype="float32",
            on_error="raise")))
        det = best(lambda: epoch_rate(ImageDetIter(
            BATCH, SHAPE, path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=0,
            num_threads=t)))
        ssd = best(lambda: epoch_rate(ImageDetIter(
            BATCH, SHAPE, path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=0,
            num_threads=t, rand_crop=0.5, rand_pad=0.5, rand_mirror=True, mean=True,
            std=True)))
        print(f"threads={t}: cv2.imdecode loop {ceiling:6.0f} img/s | ImageIter force-resize "
              f"{ii:6.0f} img/s = {ii / ceiling:.2f} x | ImageDetIter default {det:6.0f} img/s "
              f"= {det / ceiling:.2f} x ({det / ii:.2f} x ImageIter) | ImageDetIter SSD augs "
              f"{ssd:6.0f} img/s = {ssd / ceiling:.2f} x")
        measured[f"threads={t}"] = {"decode_loop": ceiling, "imageiter": ii, "imagedetiter": det,
                                    "imagedetiter_ssd": ssd}
        figures.append(figure(f"{t} thread(s): ImageDetIter vs ImageIter", det / ii, "x"))
    write_result("det_iter", settings={"images": len(payloads), "batch_size": BATCH,
                                       "data_shape": list(SHAPE), "threads": a.threads,
                                       "repeat": a.repeat, "best_of": "max images/s"},
                 results=measured, figures=figures,
                 title=f"ImageDetIter, {len(payloads)} images, default augmenters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
