"""Benchmark: JPEG decode time per libjpeg-turbo scale factor m/8, on the bench photos.

Why cloudrec.image.jpeg_scale uses only some factors: the scaled IDCTs other than 1/2,
1/4 and 1/8 have no SIMD code in libjpeg-turbo, so 3/8, 5/8, 3/4 and 7/8 can cost more
than decoding at full size.  Measured here per image, interleaved (every photo decoded
at every factor in turn, so a noisy neighbour hits all factors alike), CPU time of the
decoding thread, relative to a full-size ``simplejpeg`` decode; also ``cv2.imdecode``
(full size and its IMREAD_REDUCED 1/2, 1/4, 1/8) relative to the same baseline.  Small
(shorter side < 700 px) and big photos separately.  JSON: bench/results/jpeg_scales.json.

Usage::

    nice .venv/bin/python bench/jpeg_scales.py --n 600 --repeat 3
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import build_dataset, figure, load_payloads, write_result  # noqa: E402

from cloudrec.image.decode import image_size  # noqa: E402
from cloudrec.image.jpeg_scale import scaled_size  # noqa: E402


def _decoders() -> Dict[str, Callable[[bytes, int, int], object]]:
    import simplejpeg
    out: Dict[str, Callable] = {}
    for m in range(1, 9):
        out[f"{m}/8"] = (lambda p, w, h, m=m: simplejpeg.decode_jpeg(
            p, "BGR", min_height=scaled_size(h, m), min_width=scaled_size(w, m)))
    out["cv2 full"] = lambda p, w, h: cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)
    for k, fl in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                  (8, cv2.IMREAD_REDUCED_COLOR_8)):
        out[f"cv2 1/{k}"] = lambda p, w, h, fl=fl: cv2.imdecode(np.frombuffer(p, np.uint8), fl)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "cloudrec_bench_iri"))
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cv2.setNumThreads(1)
    payloads = load_payloads(build_dataset(a.workdir, a.n))
    dec = _decoders()
    groups: Dict[str, List[bytes]] = {"small": [], "big": []}
    for p in payloads:
        w, h = image_size(p)
        groups["small" if min(w, h) < 700 else "big"].append(p)
    clock = time.thread_time_ns
    results: Dict[str, Dict[str, float]] = {}
    for gname, ps in groups.items():
        if not ps:
            continue
        tot = {k: 0 for k in dec}
        sizes = [image_size(p) for p in ps]
        for _ in range(a.repeat):
            for p, (w, h) in zip(ps, sizes):
                for k, f in dec.items():
                    t0 = clock()
                    f(p, w, h)
                    tot[k] += clock() - t0
        base = tot["8/8"]
        results[gname] = {"images": len(ps), "full_ms": round(base / 1e6 / len(ps) / a.repeat, 3),
                          **{k: round(v / base, 3) for k, v in tot.items()}}
        print(f"{gname} ({len(ps)} photos, full decode {results[gname]['full_ms']} ms): " +
              ", ".join(f"{k} {v / base:.2f}" for k, v in tot.items()))
    big = results.get("big", results.get("small"))
    figs = [figure(f"decode time at {k} vs full size (big photos)", big[k], "x")
            for k in ("1/8", "2/8", "4/8", "5/8", "6/8", "7/8", "cv2 full")]
    write_result("jpeg_scales", settings={"n": len(payloads), "repeat": a.repeat,
                                          "clock": "thread CPU time, interleaved per photo",
                                          "baseline": "simplejpeg full-size BGR decode"},
                 results=results, figures=figs,
                 title="JPEG decode time per libjpeg-turbo scale factor (bench photos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
