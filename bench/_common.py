"""What the benchmarks share: the photo dataset, its payloads, the decode baseline, the
images/s of one pass over an iterator, and ``write_result`` (the JSON the README's table
is made from).

Benchmarks run as ``python bench/X.py``; they put this folder on ``sys.path`` and
``from _common import ...``.  Each one ends with::

    write_result("storage-s3", settings={"shards": 4, ...},
                 results={"block_vs_naive": 76.6, ...},
                 figures=[figure("planner + block vs naive reads", 76.6, "x", target=">= 10x")],
                 title="one shuffled epoch from S3 (moto behind a +20 ms proxy)")

which writes ``bench/results/storage-s3.json`` with the command line, the settings, the
machine (cpu count, load average at start and end, versions) and the figures;
``python bench/readme_table.py --write README.md`` turns every such file into the
README's table, so only printed figures appear, each with the settings it ran under.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence

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


# -- results as JSON ------------------------------------------------------------------------------

RESULTS_DIR = os.environ.get("CLOUDREC_BENCH_RESULTS",
                             os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
_VERSIONED = ("cloudrec", "numpy", "opencv-python-headless", "fsspec", "s3fs", "moto", "torch",
              "hdfs-native", "simplejpeg")


def _load() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # not on every platform
        return None


_STARTED = (_dt.datetime.now(_dt.timezone.utc), _load(), time.perf_counter())


def machine_info() -> Dict[str, Any]:
    """CPU count (and how many this process may use), load averages (1, 5, 15 min) when the
    benchmark started and now, the Python and package versions: what the figures depend on."""
    from importlib import metadata
    versions: Dict[str, Optional[str]] = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_count": os.cpu_count(), "cpus_usable": usable,
            "loadavg_start": _STARTED[1], "loadavg_end": _load(),
            "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "versions": versions}


def figure(name: str, value: float, unit: str = "", target: Optional[str] = None,
           note: Optional[str] = None, group: Optional[str] = None) -> Dict[str, Any]:
    """One printed figure for the README: ``figure("block vs naive", 76.6, "x", ">= 10x")``;
    consecutive figures of one ``group`` share a label (``requests/1k: global 941, block 24``)."""
    out: Dict[str, Any] = {"name": name, "value": value, "unit": unit}
    if group is not None:
        out["group"] = group
    if target is not None:
        out["target"] = target
    if note is not None:
        out["note"] = note
    return out


def _command() -> str:
    argv = list(sys.argv)
    if argv:
        script = os.path.abspath(argv[0])
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        argv[0] = os.path.relpath(script, repo) if script.startswith(repo + os.sep) else argv[0]
    return " ".join(["python"] + argv)


def write_result(name: str, settings: Dict[str, Any], results: Dict[str, Any],
                 figures: Sequence[Dict[str, Any]] = (), title: Optional[str] = None,
                 command: Optional[str] = None, out_dir: Optional[str] = None) -> str:
    """Write ``RESULTS_DIR/<name>.json`` (``name``: the bench's file stem, optionally
    ``-variant``, e.g. ``storage-hdfs``) and print where; return the path.

    ``settings``: every parameter the figures depend on (sizes, counts, threads, modes);
    ``results``: the raw measurements; ``figures``: what the README prints (see
    ``figure()``), in order; ``title``: what was measured, for the table's first column.
    """
    stem = name.split("-")[0]
    record = {
        "bench": name, "script": f"bench/{stem}.py", "title": title or name,
        "command": command or _command(), "settings": settings, "results": results,
        "figures": list(figures), "machine": machine_info(),
        "started": _STARTED[0].isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - _STARTED[2], 1),
    }
    folder = out_dir or RESULTS_DIR
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)
    print(f"results: {path}")
    return path
