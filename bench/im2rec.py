"""Packing throughput of ``cloudrec im2rec`` vs a plain single-process loop (what
MXNet's im2rec.py does with one thread), measured in the same run.

    python bench/im2rec.py [--n 2000] [--min-side 300] [--max-side 500] [--repeat 2] [--dir /tmp]
                           [--s3]

Makes ``--n`` photo-like JPEGs (crops of the sample photos shipped in
scikit-learn / matplotlib / scikit-image, via cloudrec.tools.photos), lists
them, then packs them pass-through and with ``--resize 256``:

* baseline: read (or cv2.imread + resize + imencode), pack, MXIndexedRecordIO.write_idx
* cloudrec im2rec --num-thread 1, 2, and 2 with --pool process

With ``--s3`` it also packs pass-through from a bucket on a loopback moto S3
server (started here), where every image is one GET: the baseline is a plain
loop of ``cat_file`` calls, then --num-thread 1, 4 and 16 (on the first
``--s3-n`` images; rates are per image, so comparable).

Each configuration runs ``--repeat`` times (best time kept); the files are
read once first so every configuration sees a warm page cache.  Prints
images/s, MB/s of input, and the ratios to the baseline and to --num-thread 1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import cv2

from cloudrec.format.irheader import IRHeader, pack
from cloudrec.format.lst import format_lst_line, parse_lst
from cloudrec.recordio import MXIndexedRecordIO, pack_img
from cloudrec.tools import im2rec
from cloudrec.tools.photos import PhotoSpec, make_photos


def baseline(lst: str, root: str, out: str, resize: int) -> None:
    """The plain loop: MXNet's single-threaded im2rec, written out by hand."""
    with open(lst) as f:
        entries = parse_lst(f.read())
    with MXIndexedRecordIO(out + ".idx", out + ".rec", "w") as w:
        for e in entries:
            path = os.path.join(root, e.path)
            header = IRHeader(0, e.labels[0], e.index, 0)
            if not resize:
                with open(path, "rb") as f:
                    w.write_idx(e.index, pack(header, f.read()))
                continue
            img = cv2.imread(path, 1)
            h, wd = img.shape[:2]
            size = (resize, h * resize // wd) if h > wd else (wd * resize // h, resize)
            w.write_idx(e.index, pack_img(header, cv2.resize(img, size), quality=95))


def best_of(repeat: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ours(work: str, lst: str, root: str, flags: List[str]) -> Callable[[], None]:
    def run() -> None:
        d = tempfile.mkdtemp(dir=work)
        shutil.copy(lst, os.path.join(d, "b.lst"))
        assert im2rec.main(flags + ["--no-progress", os.path.join(d, "b"), root]) == 0
        shutil.rmtree(d)
    return run


def s3_rows(a, work: str, lst: str, root: str) -> List[Tuple[str, str, float]]:
    """Pass-through from a loopback S3 bucket: latency-bound, where workers pay off."""
    import json

    from cloudrec.storage.fs import resolve
    from cloudrec.testing import MotoServer

    rows: List[Tuple[str, str, float]] = []
    with MotoServer() as server:
        bucket = server.new_bucket("bench-im2rec")
        so = server.storage_options
        fs, bpath = resolve(bucket, so)
        fs.put(root, bpath + "/images", recursive=True)
        src = bucket + "/images"
        with open(lst) as f:
            entries = parse_lst(f.read())[:a.s3_n]
        s3_lst = os.path.join(work, "s3.lst")
        with open(s3_lst, "w") as f:
            f.write("".join(format_lst_line(e.index, e.labels, e.path) for e in entries))

        def loop() -> None:
            with MXIndexedRecordIO(os.path.join(work, "s3.idx"), os.path.join(work, "s3.rec"),
                                   "w") as w:
                for e in entries:
                    data = fs.cat_file(bpath + "/images/" + e.path)
                    w.write_idx(e.index, pack(IRHeader(0, e.labels[0], e.index, 0), data))

        rows.append(("s3 pass-thru", "plain loop of GETs (baseline)", best_of(a.repeat, loop)))
        for nt in (1, 4, 16):
            flags = ["--pass-through", "--num-thread", str(nt), "--storage-options",
                     json.dumps(so)]
            rows.append(("s3 pass-thru", f"im2rec --num-thread {nt}",
                         best_of(a.repeat, ours(work, s3_lst, src, flags))))
    return [(m, lab, t * a.n / len(entries)) for m, lab, t in rows]  # scaled to --n images


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--min-side", type=int, default=300)
    ap.add_argument("--max-side", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--s3", action="store_true", help="also pack from a loopback S3 bucket")
    ap.add_argument("--s3-n", type=int, default=400,
                    help="images for the S3 runs (the first N of the list; moto is slow)")
    a = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-im2rec-", dir=a.dir)
    try:
        root = os.path.join(work, "images")
        t0 = time.perf_counter()
        make_photos(root, PhotoSpec(n=a.n, classes=10, min_side=a.min_side,
                                    max_side=a.max_side, gray_frac=0.0, png_frac=0.0))
        lst = os.path.join(work, "all")
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            try:
                im2rec.main(["--list", "--recursive", lst, root])
            finally:
                sys.stdout = stdout
        lst += ".lst"
        nbytes = 0
        for dp, _, files in os.walk(root):
            for f in files:
                with open(os.path.join(dp, f), "rb") as fh:
                    nbytes += len(fh.read())  # warm the page cache
        print(f"{a.n} JPEGs, {nbytes / 1e6:.1f} MB ({nbytes / a.n / 1e3:.1f} KB each, "
              f"{a.min_side}-{a.max_side} px), made in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} CPUs; best of {a.repeat}")
        rows: List[Tuple[str, str, float]] = []
        for mode, flags, resize in (("pass-through", ["--pass-through"], 0),
                                    ("--resize 256", ["--resize", "256"], 256)):
            base = best_of(a.repeat, lambda: baseline(lst, root, os.path.join(work, "base"),
                                                      resize))
            rows.append((mode, "plain loop (baseline)", base))
            for label, extra in (("im2rec --num-thread 1", ["--num-thread", "1"]),
                                 ("im2rec --num-thread 2", ["--num-thread", "2"]),
                                 ("im2rec --num-thread 2 --pool process",
                                  ["--num-thread", "2", "--pool", "process"])):
                rows.append((mode, label, best_of(a.repeat, ours(work, lst, root,
                                                                 flags + extra))))
        if a.s3:
            rows += s3_rows(a, work, lst, root)
        print(f"{'mode':14} {'configuration':38} {'images/s':>9} {'MB/s in':>8} "
              f"{'vs loop':>8} {'vs 1 thr':>8}")
        ref: Dict[str, Tuple[float, float]] = {}
        measured: Dict[str, Dict[str, float]] = {}
        for mode, label, t in rows:
            if label.startswith("plain"):
                ref[mode] = (t, 0.0)
            elif label.endswith("--num-thread 1"):
                ref[mode] = (ref[mode][0], t)
            loop_t, one_t = ref[mode]
            print(f"{mode:14} {label:38} {a.n / t:9.0f} {nbytes / t / 1e6:8.1f} "
                  f"{loop_t / t:7.2f}x {(one_t / t if one_t else float('nan')):7.2f}x")
            measured.setdefault(mode, {})[label] = a.n / t
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _common import figure, write_result
        figures = []
        for mode, rates in measured.items():
            base = next(r for lab, r in rates.items() if lab.startswith("plain"))
            figures += [figure(f"`{lab[len('im2rec '):]}`", r / base, "x", group=f"{mode} vs loop")
                        for lab, r in rates.items() if not lab.startswith("plain")]
        write_result("im2rec", settings={"images": a.n, "sides_px": [a.min_side, a.max_side],
                                         "kb_per_image": round(nbytes / a.n / 1e3, 1),
                                         "best_of": a.repeat, "s3": a.s3,
                                         "s3_images": a.s3_n if a.s3 else None},
                     results={"images_per_s": measured}, figures=figures,
                     title=f"im2rec packing, {a.n:,} JPEGs, vs a plain single-process loop")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
