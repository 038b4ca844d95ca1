"""Benchmark: ImageIter (exact and fast) vs the bare decode loop and a PyTorch DataLoader +
Pillow pipeline, same records, same transforms, same run, alternated rounds.

Dataset: as bench/imagerecorditer.py (photo-like JPEGs, 5 % of them 1000-2000 px).
ImageIter settings as the issue asks: data_shape=(3,224,224), CreateAugmenter(resize=256,
rand_crop, rand_mirror, mean, std) with MXNet's default bicubic (inter_method=2), batch 64.

Systems, each at T = 1 and 2 threads (processes for the DataLoader):

* ``decode``: ``cv2.imdecode`` of every payload at full size on T threads (the ceiling);
* ``exact``: ImageIter as MXNet's (its pixels): CreateAugmenter's chain fused by
  ``FusedChain`` (uint8 resize, crop view, flip, one float32 pass into the batch slot;
  same bits as the augmenters one by one), full-size JPEG decode, full-size resize;
* ``fast``: ``ImageIter(..., fast=True)``: JPEGs decoded at 1/2, 1/4 or 1/8 scale when
  the shorter side stays >= 256, with libjpeg-turbo's fast IDCT, and only the crop's
  source region resized (pixels close to exact mode's, not equal);
* ``torch``: DataLoader(num_workers=T) + Pillow with torchvision's Resize(256, BICUBIC),
  RandomCrop(224), flip, ToTensor, Normalize written out by hand (bench/imagerecorditer.py).

After the rounds, each mode's steps alone at one thread (bench/decode_stages.py): the
decode loop's CPU per image over the decode's plus the fused chain's, the ratio the mode
could reach if its threads, reads and hand-offs cost nothing.

Warm-up epoch per system, then rounds timing one epoch of each, the decode loop before
and after; per-round ratios (img/s, and CPU ms per image of this process), medians printed and written to bench/results/imageiter.json.
Usage (about 2 minutes on 2 busy cores)::

    nice .venv/bin/python bench/imageiter.py --n 1000 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Dict

import cv2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import build_dataset, load_payloads  # noqa: E402
from decode_stages import measure_modes  # noqa: E402
from imagerecorditer import (BATCH, loader_epoch, make_loader, run_rounds,  # noqa: E402
                             summarize_rounds)

from cloudrec.image import ImageIter  # noqa: E402


def make_iter(rec: str, threads: int, **extra) -> ImageIter:
    return ImageIter(BATCH, (3, 224, 224), path_imgrec=rec, path_imgidx=rec[:-4] + ".idx",
                     shuffle=True, seed=0, num_threads=threads, resize=256, rand_crop=True,
                     rand_mirror=True, mean=True, std=True, **extra)


def iter_epoch(it: ImageIter) -> float:
    t0 = time.perf_counter()
    it.reset()
    n = 0
    for b in it:
        n += b.data[0].shape[0] - b.pad
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "cloudrec_bench_iri"))
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cv2.setNumThreads(1)
    rec = build_dataset(a.workdir, a.n)
    payloads = load_payloads(rec)
    labels = [float(i % 10) for i in range(len(payloads))]
    kb = sum(len(p) for p in payloads) / len(payloads) / 1e3
    print(f"dataset: {len(payloads)} JPEG records, mean {kb:.1f} KB, {rec}")
    systems: Dict[int, Dict[str, object]] = {t: {} for t in a.threads}
    if not a.no_torch:  # workers fork before any cloudrec thread exists
        for t in a.threads:
            systems[t]["torch"] = make_loader(payloads, labels, t, resample="BICUBIC")
            loader_epoch(systems[t]["torch"])
    for t in a.threads:
        systems[t]["exact"] = make_iter(rec, t)
        systems[t]["fast"] = make_iter(rec, t, fast=True)
        iter_epoch(systems[t]["exact"])
        iter_epoch(systems[t]["fast"])
    rounds = run_rounds(payloads, systems, a.threads, a.rounds, iter_epoch)
    summary = summarize_rounds(rounds, systems)
    t1 = min(a.threads)  # each step alone, one thread: the ceiling each mode's steps allow
    stages = measure_modes({n: systems[t1][n] for n in ("exact", "fast")}, payloads, fused=True)
    for t in a.threads:
        s = summary[str(t)]
        line = f"threads={t}: decode loop {s['decode_img_s']:.0f} img/s | ImageIter exact " \
               f"{s['exact_img_s']:.0f} ({s['exact_vs_decode']:.2f}x decode; CPU ratio " \
               f"{s['exact_cpu_vs_decode']:.2f}) | fast {s['fast_img_s']:.0f} " \
               f"({s['fast_vs_decode']:.2f}x decode; CPU ratio {s['fast_cpu_vs_decode']:.2f})"
        if "torch" in systems[t]:
            line += f" | DataLoader+Pillow {s['torch_img_s']:.0f} | fast = " \
                    f"{s['fast_vs_torch']:.2f}x, exact = {s['exact_vs_torch']:.2f}x DataLoader+Pillow"
        print(line)
    for t in a.threads:
        for name, s in systems[t].items():
            if name != "torch":
                s.close()
    settings = {"n": len(payloads), "mean_kb": round(kb, 1), "threads": a.threads,
                "rounds": a.rounds, "data_shape": [3, 224, 224], "batch_size": BATCH,
                "augmenters": "CreateAugmenter(resize=256, rand_crop, rand_mirror, mean, std, "
                              "inter_method=2)",
                "exact": "full-size decode and resize, fused chain into the batch slot",
                "fast": "fast=True: scaled JPEG decode (1/2, 1/4, 1/8 keeping the short side "
                        ">= 256, fast IDCT), crop-region resize, fused chain",
                "torch_pipeline": "DataLoader(num_workers=T, persistent) + Pillow BICUBIC, "
                                  "payloads in memory",
                "decode": "cv2.imdecode IMREAD_COLOR full size on T threads, payloads in memory"}
    results = {"rounds": {str(t): v for t, v in rounds.items()}, "summary": summary,
               "stages_1_thread": stages}
    from _common import figure, write_result
    t = max(a.threads)
    s = summary[str(t)]
    figs = [figure(f"ImageIter fast vs full-size decode loop, {t} threads",
                   round(s["fast_vs_decode"], 2), "x", ">= 0.9x"),
            figure(f"ImageIter exact vs full-size decode loop, {t} threads",
                   round(s["exact_vs_decode"], 2), "x", ">= 0.8x")]
    if "fast_vs_torch" in s:
        figs.append(figure(f"ImageIter fast vs DataLoader + Pillow, {t} workers",
                           round(s["fast_vs_torch"], 2), "x", ">= 3x"))
    for name, st in stages.items():
        figs.append(figure(f"ImageIter {name}: ceiling its own steps allow (loop CPU / decode + "
                           f"chain CPU, 1 thread)", round(st["ceiling"], 2), "x"))
    write_result("imageiter", settings=settings, results=results, figures=figs,
                 title="ImageIter: CreateAugmenter(resize 256, rand_crop 224, mirror, mean, "
                       "std), bicubic, batch 64")
    return 0


if __name__ == "__main__":
    sys.exit(main())
