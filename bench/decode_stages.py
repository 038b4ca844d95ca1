"""Per-image CPU of each step of ImageRecordIter's per-image work, at one thread, to show how
close each mode can come to the bare decode loop (the ceiling the ratios are quoted against).

For one iterator, each step is timed alone over the same payloads, in one thread, with
the iterator's own objects (its ``DefaultAugmenter`` and ``ImageWriter``):

* ``decode``: ``decode_process`` (decode + resize/crop) minus ``process`` alone, so the decode
  is the one the mode really runs (exact: full size, accurate IDCT; fast: scaled where a
  paying factor fits, fast IDCT);
* ``geometry``: ``process`` on the decoded images (the resize and crop);
* ``write``: ``ImageWriter.write`` of the crops into one batch slot (mirror on half of them).

``ceiling`` = the decode loop's CPU per image / the sum of the steps: the most the
iterator could reach against the loop if its threads, reads and hand-offs cost nothing.
Each step is the median of ``repeats`` passes, the loop timed before each pass.

:func:`chain_stage_costs` does the same for ImageIter's fused chain (decode, then the chain's
resize, crop, mirror and write in one step).

Usage: called by bench/imagerecorditer.py and bench/imageiter.py; alone::

    nice .venv/bin/python bench/decode_stages.py --n 1000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, List, Sequence

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _cpu_ms(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    """CPU ms per item of ``fn`` over ``items`` (this thread; nothing else runs here)."""
    t = time.thread_time()
    for x in items:
        fn(x)
    return (time.thread_time() - t) * 1e3 / len(items)


def stage_costs(it: Any, payloads: List[bytes], repeats: int = 3) -> Dict[str, float]:
    """Per-image CPU ms of the decode loop and of each of ``it``'s steps (see the module doc)."""
    from cloudrec.image.decode import decode_image
    from cloudrec.pipeline.augment import AugRng
    aug, writer = it._aug, it._writer
    bufs = [memoryview(p) for p in payloads]
    out = np.empty(tuple(it.data_shape), np.float32)
    rng = AugRng(0)
    imgs = [decode_image(b, aug.C) for b in bufs]
    crops = [aug.process(i, rng) for i in imgs]

    def loop(b: memoryview) -> None:
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)

    runs: Dict[str, List[float]] = {"loop": [], "decode": [], "geometry": [], "write": []}
    for _ in range(repeats):
        runs["loop"].append(_cpu_ms(loop, bufs))
        both = _cpu_ms(lambda b: aug.decode_process(b, rng), bufs)
        if aug.fast:  # the steps of the fused path: process the scaled decode it really gets
            scaled = [_decoded_fast(aug, b) for b in bufs]
            geo = _cpu_ms(lambda x: aug.process(x[0], rng, src_size=x[1]), scaled)
        else:
            geo = _cpu_ms(lambda i: aug.process(i, rng), imgs)
        runs["decode"].append(both - geo)
        runs["geometry"].append(geo)
        runs["write"].append(_cpu_ms(lambda c: writer.write(c, out, rng.random() < 0.5), crops))
    med = {k: round(float(np.median(v)), 3) for k, v in runs.items()}
    steps = med["decode"] + med["geometry"] + med["write"]
    med["steps"] = round(steps, 3)
    med["ceiling"] = round(med["loop"] / steps, 3)
    return med


def chain_stage_costs(it: Any, payloads: List[bytes], repeats: int = 3) -> Dict[str, float]:
    """The same for an ImageIter whose augmenters run fused (``FusedChain``): ``decode`` is
    its ``imdecode`` (exact: full size; fast: scaled where it pays, fast IDCT), ``chain``
    the fused resize, crop, mirror and normalising write into one slot."""
    import numpy.random as npr
    chain = it._fused_chain()
    if chain is None:
        raise ValueError("this ImageIter's augmenters do not run fused")
    bufs = [memoryview(p) for p in payloads]
    out = np.empty(chain.out_shape, np.float32)
    rng = npr.default_rng(0)
    imgs = [it.imdecode(b) for b in bufs]

    def loop(b: memoryview) -> None:
        cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)

    runs: Dict[str, List[float]] = {"loop": [], "decode": [], "chain": []}
    for _ in range(repeats):
        runs["loop"].append(_cpu_ms(loop, bufs))
        runs["decode"].append(_cpu_ms(it.imdecode, bufs))
        runs["chain"].append(_cpu_ms(lambda i: chain.run(i, rng, out), imgs))
    med = {k: round(float(np.median(v)), 3) for k, v in runs.items()}
    med["steps"] = round(med["decode"] + med["chain"], 3)
    med["ceiling"] = round(med["loop"] / med["steps"], 3)
    return med


def measure_modes(iters: Dict[str, Any], payloads: List[bytes], fused: bool = False
                  ) -> Dict[str, Dict[str, float]]:
    """The steps of each iterator of ``iters`` (mode name -> iterator), printed as they come:
    :func:`chain_stage_costs` when ``fused`` (ImageIter), else :func:`stage_costs`."""
    out = {}
    for name, it in iters.items():
        st = out[name] = (chain_stage_costs if fused else stage_costs)(it, payloads)
        steps = " + ".join(f"{k} {v:.3f}" for k, v in st.items()
                           if k not in ("loop", "steps", "ceiling"))
        print(f"{name} steps at 1 thread, CPU ms per image: decode loop {st['loop']:.3f} | "
              f"{steps} = {st['steps']:.3f} -> ceiling {st['ceiling']:.2f}x the loop")
    return out


def _decoded_fast(aug: Any, b: memoryview) -> tuple:
    """(image, source size) as fast mode's ``decode_process`` hands them to ``process``."""
    from cloudrec.image.decode import check_pixels, decode_image
    from cloudrec.image.jpeg_scale import decode_jpeg
    arr = np.frombuffer(b, np.uint8)
    size = check_pixels(arr, None)
    img = decode_jpeg(arr, aug.C, size, aug.min_side, fast=True) if arr[0] == 0xFF else None
    if img is None:
        img = decode_image(arr, aug.C, min_side=aug.min_side)
    return img, (size if aug.fused else None)


def main(argv=None) -> int:
    from _common import build_dataset, figure, load_payloads, write_result
    from imageiter import make_iter as make_image_iter
    from imagerecorditer import make_iter
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "cloudrec_bench_iri"))
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    os.makedirs(a.workdir, exist_ok=True)
    rec = build_dataset(a.workdir, a.n)
    payloads = load_payloads(rec)
    iri = {f"ImageRecordIter {n}": make_iter(rec, 1, **kw)
           for n, kw in (("exact", {}), ("fast", {"decode_reduce": True}))}
    ii = {f"ImageIter {n}": make_image_iter(rec, 1, **kw)
          for n, kw in (("exact", {}), ("fast", {"fast": True}))}
    out = {**measure_modes(iri, payloads), **measure_modes(ii, payloads, fused=True)}
    for it in list(iri.values()) + list(ii.values()):
        it.close()
    figs = [figure(f"{k}: decode loop CPU / its steps' CPU, 1 thread", round(v["ceiling"], 2), "x")
            for k, v in out.items()]
    write_result("decode_stages", settings={"n": len(payloads), "repeats": a.repeats,
                                            "threads": 1, "resize": 256, "crop": 224,
                                            "unit": "CPU ms per image"},
                 results=out, figures=figs,
                 title="each decode mode's steps alone (decode, resize/crop, write), 1 thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
