"""Benchmark: ImageRecordIter (exact and fast) vs the bare decode loop and a PyTorch DataLoader +
Pillow pipeline, same records, same transforms, same run, alternated rounds.

Dataset: photo-like JPEGs made from the sample photos shipped in PyPI packages
(``cloudrec.tools.photos``: 300-600 px, 5 % of them 1000-2000 px), packed pass-through
into one `.rec`/`.idx` (bench/_common.py).  Transforms: resize shorter side 256, random
crop 224, random mirror, mean/std normalisation, batch 64, float32 NCHW.

Systems, each at T = 1 and 2 threads (processes for the DataLoader):

* ``decode``: ``cv2.imdecode`` of every payload at full size on T threads, payloads in
  memory: the ceiling (decode only, nothing else);
* ``exact``: ImageRecordIter, MXNet-exact pixels (the default);
* ``fast``: ImageRecordIter with ``decode_reduce=True`` (scaled JPEG decode, crop-aware resize);
* ``dataset``: cloudrec's torch ``ImageRecordDataset`` (its default ``decode_reduce=True``)
  through ``ResumableLoader(num_workers=0)``: one ImageRecordIter per epoch with T decode
  threads in the training process, as a DataLoader without worker processes runs it;
* ``torch``: ``DataLoader(num_workers=T, batch_size=64, shuffle=True, persistent_workers)``
  over the payloads in memory, Pillow decode and torchvision's Resize(256), RandomCrop(224),
  RandomHorizontalFlip, ToTensor, Normalize written out by hand (torchvision is not
  installed: its wheel would replace the venv's torch), so the same PIL calls run.

Every iterator and loader is built and run for one warm-up epoch first (thread pools,
worker processes, batch buffers), then each round times one epoch of each system in turn
with the decode loop before, between and after them (systems in reverse order every other
round); each system's ratio is against the mean of the two decode runs next to it (other
jobs' load drifts within a round), the medians over the rounds are printed (with the CPU
ratio: CPU ms per image of the decode loop over the system's, all its threads, which other
jobs on the machine disturb less than img/s) and written (with every round) to
bench/results/imagerecorditer.json.

After the rounds, each mode's steps are timed alone at one thread (bench/decode_stages.py:
decode, resize/crop, write, with the iterator's own objects): the decode loop's CPU per
image over their sum is the ratio the mode could reach if its threads, reads and hand-offs
cost nothing, printed and written as ``stages_1_thread``.

Usage (runs in ~2 minutes on 2 busy cores)::

    nice .venv/bin/python bench/imagerecorditer.py --n 1000 --rounds 3
"""
from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from typing import Dict, List

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_decode, build_dataset, load_payloads  # noqa: E402
from decode_stages import measure_modes  # noqa: E402

from cloudrec.iterators import ImageRecordIter  # noqa: E402

MEAN = (123.68, 116.779, 103.939)
STD = (58.395, 57.12, 57.375)
BATCH = 64


def make_iter(rec: str, threads: int, **extra) -> ImageRecordIter:
    kw = dict(path_imgrec=rec, path_imgidx=rec[:-4] + ".idx", data_shape=(3, 224, 224),
              resize=256, rand_crop=True, rand_mirror=True, batch_size=BATCH,
              mean_r=MEAN[0], mean_g=MEAN[1], mean_b=MEAN[2], std_r=STD[0], std_g=STD[1],
              std_b=STD[2], preprocess_threads=threads, prefetch_buffer=4, shuffle=True)
    kw.update(extra)
    return ImageRecordIter(**kw)


def make_dataset_loader(rec: str, threads: int):
    """cloudrec's torch ImageRecordDataset with the same settings (fast path by default)."""
    from cloudrec.torch import ImageRecordDataset, ResumableLoader
    kw = dict(path_imgrec=rec, path_imgidx=rec[:-4] + ".idx", data_shape=(3, 224, 224),
              resize=256, rand_crop=True, rand_mirror=True, batch_size=BATCH,
              mean_r=MEAN[0], mean_g=MEAN[1], mean_b=MEAN[2], std_r=STD[0], std_g=STD[1],
              std_b=STD[2], preprocess_threads=threads, prefetch_buffer=4, shuffle=True)
    return ResumableLoader(ImageRecordDataset(**kw), num_workers=0)


def dataset_epoch(loader) -> float:
    """Images/s of the next epoch, timed until its worker iterator's pool is idle (see
    :func:`iter_epoch`)."""
    from cloudrec.torch_images import _WORKER_ITERS
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        n += b["data"].shape[0] - b["pad"]
    kept = _WORKER_ITERS.get(loader.dataset)
    if kept is not None:
        kept[1]._pipeline.wait_idle()
    return n / (time.perf_counter() - t0)


def iter_epoch(it: ImageRecordIter) -> float:
    """Images/s of the next epoch; the reset is timed (the pipeline idles until then), and so
    is the next epoch's first batch, built ahead at the end of this one: the clock stops when
    the pool is idle, so that work is not done inside the next system's timing (in steady
    state each timed epoch holds one epoch of work)."""
    t0 = time.perf_counter()
    it.reset()
    n = 0
    for b in it:
        n += b.data[0].shape[0] - b.pad
    it._pipeline.wait_idle()
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------- PyTorch + Pillow
class PillowDataset:
    """torchvision's Resize(256) / RandomCrop(224) / RandomHorizontalFlip / ToTensor /
    Normalize on Pillow images, written out with the same PIL and torch calls."""

    def __init__(self, payloads: List[bytes], labels: List[float], resample: str = "BILINEAR"
                 ) -> None:
        self.payloads, self.labels, self.resample = payloads, labels, resample
        self.mean = [m / 255 for m in MEAN]
        self.std = [s / 255 for s in STD]

    def __len__(self) -> int:
        return len(self.payloads)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image
        img = Image.open(io.BytesIO(self.payloads[i])).convert("RGB")
        w, h = img.size
        size = 256
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if (w, h) != (nw, nh):
            img = img.resize((nw, nh), getattr(Image, self.resample))
        x = random.randint(0, nw - 224)
        y = random.randint(0, nh - 224)
        img = img.crop((x, y, x + 224, y + 224))
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        t = t.to(torch.float32).div(255)
        mean = torch.as_tensor(self.mean).view(-1, 1, 1)
        std = torch.as_tensor(self.std).view(-1, 1, 1)
        t.sub_(mean).div_(std)
        return t, torch.tensor(self.labels[i])


def make_loader(payloads: List[bytes], labels: List[float], workers: int,
                resample: str = "BILINEAR"):
    import torch
    from torch.utils.data import DataLoader
    torch.set_num_threads(1)
    return DataLoader(PillowDataset(payloads, labels, resample), batch_size=BATCH, shuffle=True,
                      num_workers=workers, persistent_workers=True, prefetch_factor=4)


def loader_epoch(loader) -> float:
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------- main
def run_rounds(payloads: List[bytes], systems: Dict[int, Dict[str, object]],
               threads: List[int], n_rounds: int, iter_epoch,
               adjacent_decode: bool = False) -> Dict[int, List[Dict[str, float]]]:
    """Alternated rounds: per thread count, the decode loop, each cloudrec system (img/s and
    this process's CPU ms per image, which other jobs on the cores do not inflate), the torch
    pipeline, and the decode loop again.

    ``adjacent_decode``: the decode loop also runs between systems, and each system is
    compared with the mean of the two decode runs around it (``<name>_decode``): the load
    other jobs put on the machine drifts within a round, so a neighbour is a fairer
    baseline than the round's ends; every other round runs the systems in reverse order,
    so no system always follows the same one."""
    rounds: Dict[int, List[Dict[str, float]]] = {t: [] for t in threads}

    def timed(run) -> tuple:
        c0 = time.process_time()
        v = run()
        return v, (time.process_time() - c0) * 1e3 / len(payloads)
    for r in range(n_rounds):
        for t in threads:
            row: Dict[str, float] = {}
            cpu: Dict[str, float] = {}
            names = [k for k in systems[t] if k != "torch"] + (
                ["torch"] if "torch" in systems[t] else [])
            if adjacent_decode and r % 2:
                names = names[::-1]
            row["decode_before"], cpu["decode_before"] = timed(lambda: bench_decode(payloads, t))
            prev, dec_cpu = row["decode_before"], [cpu["decode_before"]]
            for k in names:
                s = systems[t][k]
                if k == "torch":
                    row["torch"] = loader_epoch(s)
                else:
                    ep = dataset_epoch if k == "dataset" else iter_epoch
                    row[k], cpu[k] = timed(lambda s=s, ep=ep: ep(s))
                if adjacent_decode:
                    d, c = timed(lambda: bench_decode(payloads, t))
                    row[f"{k}_decode"], prev = (prev + d) / 2, d
                    dec_cpu.append(c)
            row["decode_after"] = prev if adjacent_decode else bench_decode(payloads, t)
            row.update({f"{k}_cpu_ms": round(v, 3) for k, v in cpu.items()})
            if adjacent_decode:
                row["decode_cpu_ms"] = round(float(np.mean(dec_cpu)), 3)
            rounds[t].append(row)
            print(f"round {r + 1} threads={t}: " + ", ".join(
                f"{k} {v:.0f}" for k, v in row.items() if not k.endswith("_cpu_ms")))
    return rounds


def summarize_rounds(rounds: Dict[int, List[Dict[str, float]]],
                     systems: Dict[int, Dict[str, object]]) -> Dict[str, Dict[str, float]]:
    """Medians over the rounds: img/s, ratios to the decode loop (the mean of the decode runs
    next to the system when the rounds have them, else of the round's first and last),
    CPU per image vs the decode loop, and fast/exact vs the torch pipeline."""
    med = lambda xs: float(np.median(xs))  # noqa: E731
    summary: Dict[str, Dict[str, float]] = {}
    for t, rows in rounds.items():
        dec = [(x["decode_before"] + x["decode_after"]) / 2 for x in rows]
        s = {"decode_img_s": med(dec)}
        for name in [k for k in ("exact", "fast", "dataset") if k in systems[t]]:
            # CPU per image, decode loop / system (1.0 = as cheap)
            s[f"{name}_cpu_vs_decode"] = med([x.get("decode_cpu_ms", x["decode_before_cpu_ms"])
                                              / x[f"{name}_cpu_ms"] for x in rows])
        for name in systems[t]:
            s[f"{name}_img_s"] = med([x[name] for x in rows])
            s[f"{name}_vs_decode"] = med([x[name] / x.get(f"{name}_decode", d)
                                          for x, d in zip(rows, dec)])
        if "torch" in systems[t]:
            s["fast_vs_torch"] = med([x["fast"] / x["torch"] for x in rows])
            s["exact_vs_torch"] = med([x["exact"] / x["torch"] for x in rows])
            if "dataset" in systems[t]:
                s["dataset_vs_torch"] = med([x["dataset"] / x["torch"] for x in rows])
        summary[str(t)] = s
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="images in the dataset")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true", help="skip the DataLoader + Pillow pipeline")
    ap.add_argument("--no-dataset", action="store_true",
                    help="skip cloudrec's torch ImageRecordDataset")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                      "cloudrec_bench_iri"))
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cv2.setNumThreads(1)  # one image per thread, as in the iterator; no nested pools
    rec = build_dataset(a.workdir, a.n)
    payloads = load_payloads(rec)
    labels = [float(i % 10) for i in range(len(payloads))]
    kb = sum(len(p) for p in payloads) / len(payloads) / 1e3
    print(f"dataset: {len(payloads)} JPEG records, mean {kb:.1f} KB, {rec}")
    systems: Dict[int, Dict[str, object]] = {t: {} for t in a.threads}
    # built and warmed up once, as a training job does; the DataLoader workers first, so
    # that they fork before any cloudrec thread exists
    if not a.no_torch:
        for t in a.threads:
            systems[t]["torch"] = make_loader(payloads, labels, t)
            loader_epoch(systems[t]["torch"])
    for t in a.threads:
        systems[t]["exact"] = make_iter(rec, t)
        systems[t]["fast"] = make_iter(rec, t, decode_reduce=True)
        iter_epoch(systems[t]["exact"])
        iter_epoch(systems[t]["fast"])
        if not a.no_dataset:
            systems[t]["dataset"] = make_dataset_loader(rec, t)
            dataset_epoch(systems[t]["dataset"])
    rounds = run_rounds(payloads, systems, a.threads, a.rounds, iter_epoch,
                        adjacent_decode=True)
    summary = summarize_rounds(rounds, systems)
    t1 = min(a.threads)  # each step alone, one thread: the ceiling each mode's steps allow
    stages = measure_modes({n: systems[t1][n] for n in ("exact", "fast")}, payloads)
    for t in a.threads:
        s = summary[str(t)]
        line = f"threads={t}: decode loop {s['decode_img_s']:.0f} img/s | exact " \
               f"{s['exact_img_s']:.0f} ({s['exact_vs_decode']:.2f}x decode; CPU ratio " \
               f"{s['exact_cpu_vs_decode']:.2f}) | fast {s['fast_img_s']:.0f} " \
               f"({s['fast_vs_decode']:.2f}x decode; CPU ratio {s['fast_cpu_vs_decode']:.2f})"
        if "dataset" in systems[t]:
            line += f" | ImageRecordDataset {s['dataset_img_s']:.0f} " \
                    f"({s['dataset_vs_decode']:.2f}x decode)"
        if "torch" in systems[t]:
            line += f" | DataLoader+Pillow {s['torch_img_s']:.0f} ({s['torch_vs_decode']:.2f}x " \
                    f"decode) | fast = {s['fast_vs_torch']:.2f}x DataLoader+Pillow"
        print(line)
    for t in a.threads:
        for name, s in systems[t].items():
            if name not in ("torch", "dataset"):
                s.close()
    settings = {"n": len(payloads), "mean_kb": round(kb, 1), "threads": a.threads,
                "rounds": a.rounds, "data_shape": [3, 224, 224], "resize": 256,
                "rand_crop": True, "rand_mirror": True, "mean": MEAN, "std": STD,
                "batch_size": BATCH, "dtype": "float32", "layout": "NCHW",
                "dataset": "cloudrec.tools.photos, 5% 1000-2000 px, rest 300-600 px",
                "torch_pipeline": "DataLoader(num_workers=T, persistent) + Pillow, payloads in memory",
                "torch_dataset": "cloudrec.torch.ImageRecordDataset (decode_reduce=True default), "
                           "ResumableLoader(num_workers=0), T decode threads",
                "decode": "cv2.imdecode IMREAD_COLOR full size on T threads, payloads in memory",
                "baseline": "each system vs the mean of the decode-loop runs just before and "
                            "after it; systems in reverse order every other round"}
    _write(settings, {"rounds": {str(t): v for t, v in rounds.items()}, "summary": summary,
                      "stages_1_thread": stages}, a.threads)
    return 0


def _write(settings, results, threads) -> None:
    try:
        from _common import figure, write_result
    except ImportError:  # older _common: plain JSON
        import json
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            "imagerecorditer.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"settings": settings, "results": results}, f, indent=1)
        print(f"results: {path}")
        return
    s = results["summary"][str(max(threads))]
    t = max(threads)
    figs = [figure(f"fast (decode_reduce) vs full-size decode loop, {t} threads",
                   round(s["fast_vs_decode"], 2), "x", ">= 0.9x"),
            figure(f"exact vs full-size decode loop, {t} threads",
                   round(s["exact_vs_decode"], 2), "x", ">= 0.8x")]
    if "fast_vs_torch" in s:
        figs.append(figure(f"fast vs DataLoader + Pillow, {t} workers",
                           round(s["fast_vs_torch"], 2), "x", ">= 3x"))
    if "dataset_vs_decode" in s:
        figs.append(figure(f"torch ImageRecordDataset vs full-size decode loop, {t} threads",
                           round(s["dataset_vs_decode"], 2), "x", ">= 0.9x"))
    for name, st in results.get("stages_1_thread", {}).items():
        figs.append(figure(f"{name}: ceiling its own steps allow (loop CPU / decode + resize "
                           f"+ write CPU, 1 thread)", round(st["ceiling"], 2), "x"))
    if "dataset_vs_torch" in s:
        figs.append(figure(f"torch ImageRecordDataset vs DataLoader + Pillow, {t} workers",
                           round(s["dataset_vs_torch"], 2), "x", ">= 3x"))
    write_result("imagerecorditer", settings=settings, results=results, figures=figs,
                 title="ImageRecordIter: resize 256, random crop 224, mirror, mean/std, "
                       "batch 64, float32 NCHW")


if __name__ == "__main__":
    sys.exit(main())
