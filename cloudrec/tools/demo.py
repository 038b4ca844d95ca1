"""``cloudrec demo``: the whole path a new user walks, end to end, in minutes.

1. make a photo dataset from sample photos shipped inside PyPI packages;
2. list and pack it into `.rec`/`.idx` shards with ``cloudrec im2rec``;
3. start an S3 server on 127.0.0.1 (moto) — or use ``--bucket`` with real
   credentials — and upload the shards;
4. train a tiny PyTorch CNN for ``--epochs`` epochs on ``--ranks`` processes (gloo, CPU)
   with ImageRecordIter reading ``s3://`` shards, partitioned across ranks;
   without torch, iterate the same batches instead;
5. write a contact sheet PNG of the first augmented batch and print a summary.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from cloudrec.tools.cli_support import DefaultsHelpFormatter

DATA_SHAPE = (3, 64, 64)
MEAN = (123.68, 116.779, 103.939)
STD = (58.395, 57.12, 57.375)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def build_shards(workdir: str, n_images: int, classes: int, shards: int) -> List[str]:
    """Photos -> .lst -> pass-through .rec/.idx shards; return the local .rec paths."""
    from cloudrec.tools import im2rec
    from cloudrec.tools.photos import PhotoSpec, make_photos

    photos = os.path.join(workdir, "photos")
    t0 = time.perf_counter()
    make_photos(photos, PhotoSpec(n=n_images, classes=classes, min_side=96, max_side=200))
    _say(f"made {n_images} photos in {classes} classes under {photos} "
         f"({time.perf_counter() - t0:.1f}s)")
    prefix = os.path.join(workdir, "rec", "train")
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    rc = im2rec.main(["--list", "--recursive", prefix, photos])
    if rc:
        raise RuntimeError(f"im2rec --list failed with exit code {rc}")
    rc = im2rec.main(["--resize", "72", "--quality", "90", "--num-thread", "2",
                      "--num-shards", str(shards), prefix, photos])
    if rc:
        raise RuntimeError(f"im2rec packing failed with exit code {rc}")
    recs = sorted(os.path.join(os.path.dirname(prefix), f)
                  for f in os.listdir(os.path.dirname(prefix)) if f.endswith(".rec"))
    if len(recs) != shards:
        raise RuntimeError(f"expected {shards} shards, im2rec wrote {recs}")
    return recs


def upload(recs: List[str], bucket_url: str, storage_options: Dict[str, Any]) -> str:
    """Copy shards (and their .idx) to ``bucket_url``; return the glob URL of the shards."""
    from cloudrec.storage.fs import resolve

    fs, base = resolve(bucket_url, storage_options)
    t0 = time.perf_counter()
    total = 0
    for rec in recs:
        for path in (rec, os.path.splitext(rec)[0] + ".idx"):
            fs.put_file(path, base.rstrip("/") + "/" + os.path.basename(path))
            total += os.path.getsize(path)
    _say(f"uploaded {len(recs)} shards ({total / 1e6:.1f} MB) to {bucket_url} "
         f"in {time.perf_counter() - t0:.1f}s")
    return bucket_url.rstrip("/") + "/" + _shard_glob(recs)


def _shard_glob(recs: List[str]) -> str:
    name = os.path.basename(recs[0])
    stem = name.split("-")[0] if "-" in name else os.path.splitext(name)[0]
    return f"{stem}-*.rec" if len(recs) > 1 else name


def make_iter(url: str, storage_options: Dict[str, Any], rank: int, ranks: int,
              batch_size: int, threads: int):
    """The training iterator: random crops, mirrors and colour jitter, normalised."""
    from cloudrec.iterators import ImageRecordIter

    return ImageRecordIter(
        path_imgrec=url, data_shape=DATA_SHAPE, batch_size=batch_size, shuffle=True, seed=0,
        rand_crop=True, rand_mirror=True, brightness=0.2, contrast=0.2, saturation=0.2,
        mean_r=MEAN[0], mean_g=MEAN[1], mean_b=MEAN[2], std_r=STD[0], std_g=STD[1], std_b=STD[2],
        num_parts=ranks, part_index=rank, part_mode="even",  # same batch count on every rank
        preprocess_threads=threads, prefetch_buffer=2, storage_options=storage_options)


def contact_sheet(batch_data: np.ndarray, labels: np.ndarray, path: str, cols: int = 8) -> str:
    """Undo the normalisation of an NCHW batch and tile it with labels into a PNG."""
    import cv2

    imgs = batch_data.transpose(0, 2, 3, 1) * np.array(STD, np.float32) + np.array(MEAN, np.float32)
    imgs = np.clip(imgs, 0, 255).astype(np.uint8)[..., ::-1]  # RGB -> BGR for cv2
    n, h, w, _ = imgs.shape
    rows = (n + cols - 1) // cols
    scale = 2
    sheet = np.full((rows * (h * scale + 16), cols * w * scale, 3), 255, np.uint8)
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        r, c = divmod(i, cols)
        y, x = r * (h * scale + 16), c * w * scale
        sheet[y:y + h * scale, x:x + w * scale] = cv2.resize(img, (w * scale, h * scale),
                                                             interpolation=cv2.INTER_NEAREST)
        cv2.putText(sheet, f"label {int(lab)}", (x + 4, y + h * scale + 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, sheet):
        raise OSError(f"cannot write {path}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_rank(rank: int, ranks: int, port: int, url: str, storage_options: Dict[str, Any],
                batch_size: int, epochs: int, threads: int, sheet: str, results) -> None:
    """One DDP rank: ImageRecordIter part ``rank`` -> tiny CNN, SGD, gloo all-reduce."""
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    from tqdm import tqdm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=ranks)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 16))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    it = make_iter(url, storage_options, rank, ranks, batch_size, threads)
    seen, steps, losses = 0, 0, []
    t0 = time.perf_counter()
    try:
        for epoch in range(epochs):
            if epoch:
                it.reset()
            bar = tqdm(it, desc=f"epoch {epoch} (rank 0 of {ranks})", unit="batch",
                       total=it.num_batches, disable=rank != 0, file=sys.stdout,
                       mininterval=0.5)
            for batch in bar:
                x = torch.from_numpy(batch.data[0])
                y = torch.from_numpy(batch.label[0]).long()
                keep = torch.ones(len(y))
                if batch.pad:
                    keep[len(y) - batch.pad:] = 0  # padded slots repeat records: no gradient
                if rank == 0 and steps == 0:
                    contact_sheet(batch.data[0], batch.label[0], sheet)
                loss = (loss_fn(ddp(x), y) * keep).sum() / keep.sum().clamp(min=1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(y) - batch.pad
                steps += 1
                losses.append(loss.item())
                if rank == 0:
                    bar.set_postfix(img_s=f"{seen * ranks / (time.perf_counter() - t0):.0f}",
                                    loss=f"{losses[-1]:.3f}")
    finally:
        it.close()
    elapsed = time.perf_counter() - t0
    counts = torch.tensor([seen, steps], dtype=torch.int64)
    dist.all_reduce(counts)
    results.put(dict(rank=rank, seen=seen, steps=steps, elapsed=elapsed,
                     total_seen=int(counts[0]), first_loss=losses[0] if losses else None,
                     last_loss=losses[-1] if losses else None))
    dist.destroy_process_group()


def train(url: str, storage_options: Dict[str, Any], ranks: int, epochs: int, batch_size: int,
          threads: int, sheet: str) -> Dict[str, Any]:
    """Train on ``ranks`` processes; return the summary of rank 0 plus totals."""
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_train_rank, args=(r, ranks, port, url, storage_options,
                                                   batch_size, epochs, threads, sheet, results))
             for r in range(ranks)]
    for p in procs:
        p.start()
    out = []
    deadline = time.time() + 900
    while len(out) < ranks and time.time() < deadline:
        try:
            out.append(results.get(timeout=5))
        except Exception:
            if any(p.exitcode not in (None, 0) for p in procs):
                break
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad or len(out) < ranks:
        raise RuntimeError(f"training ranks failed (exit codes {[p.exitcode for p in procs]})")
    out.sort(key=lambda d: d["rank"])
    elapsed = max(d["elapsed"] for d in out)
    return dict(images=out[0]["total_seen"], steps=out[0]["steps"], elapsed=elapsed,
                first_loss=out[0]["first_loss"], last_loss=out[0]["last_loss"])


def iterate_only(url: str, storage_options: Dict[str, Any], ranks: int, epochs: int,
                 batch_size: int, threads: int, sheet: str) -> Dict[str, Any]:
    """Without torch: read every rank's partition in turn, as the ranks would."""
    from tqdm import tqdm

    seen = steps = 0
    t0 = time.perf_counter()
    for rank in range(ranks):
        it = make_iter(url, storage_options, rank, ranks, batch_size, threads)
        try:
            for epoch in range(epochs):
                if epoch:
                    it.reset()
                for batch in tqdm(it, desc=f"rank {rank} epoch {epoch}", unit="batch",
                                  total=it.num_batches, file=sys.stdout, mininterval=0.5):
                    if steps == 0:
                        contact_sheet(batch.data[0], batch.label[0], sheet)
                    seen += batch.data[0].shape[0] - batch.pad
                    steps += 1
        finally:
            it.close()
    return dict(images=seen, steps=steps, elapsed=time.perf_counter() - t0,
                first_loss=None, last_loss=None)


def check_requirements(args: argparse.Namespace) -> None:
    """Fail before any work when the demo extra is missing: ModuleNotFoundError naming the
    first absent module (the CLI turns it into ``pip install 'cloudrec[demo]'``)."""
    from cloudrec.tools.photos import find_sample_photos

    if not args.bucket and not _importable("moto"):
        raise ModuleNotFoundError("the loopback S3 server needs moto", name="moto")
    if not find_sample_photos():
        raise ModuleNotFoundError("the demo's photos come from scikit-learn, matplotlib and "
                                  "scikit-image; none is installed", name="sklearn")


def _importable(module: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    check_requirements(args)
    workdir = args.workdir or tempfile.mkdtemp(prefix="cloudrec-demo-")
    os.makedirs(workdir, exist_ok=True)
    sheet = os.path.abspath(args.sheet or os.path.join(workdir, "first_batch.png"))
    recs = build_shards(workdir, args.images, args.classes, args.shards)
    server = None
    try:
        if args.bucket:
            from cloudrec.config import StorageConfig
            bucket_url, opts = args.bucket, StorageConfig(
                endpoint_url=args.endpoint_url).storage_options()
        else:
            from cloudrec.testing.servers import MotoServer
            server = MotoServer().start()
            bucket_url, opts = server.new_bucket("cloudrec-demo"), server.storage_options
            _say(f"S3 server (moto) on {server.endpoint_url}")
        url = upload(recs, bucket_url + "/train", opts)
        try:
            import torch  # noqa: F401
            have_torch = not args.no_torch
        except ImportError:
            have_torch = False
        _say(f"{'training' if have_torch else 'iterating (torch not installed)'} from {url} "
             f"on {args.ranks} ranks, {args.epochs} epoch(s)")
        fn = train if have_torch else iterate_only
        stats = fn(url, opts, args.ranks, args.epochs, args.batch_size, args.threads, sheet)
    finally:
        if server is not None:
            server.stop()
    rate = stats["images"] / stats["elapsed"] if stats["elapsed"] else 0.0
    loss = (f", loss {stats['first_loss']:.3f} -> {stats['last_loss']:.3f}"
            if stats["first_loss"] is not None else "")
    print(f"demo summary: {stats['images']} images in {stats['elapsed']:.1f}s = {rate:.0f} images/s, "
          f"epochs={args.epochs}, ranks={args.ranks}{loss}, contact sheet: {sheet}, "
          f"total {time.perf_counter() - t_start:.0f}s", flush=True)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="pack photos, serve them from S3 on loopback, train",
                              description=__doc__,
                              formatter_class=DefaultsHelpFormatter)
    p.add_argument("--workdir", default=None,
                   help="folder for the photos, lists and shards (default: a new temp folder)")
    p.add_argument("--images", type=int, default=2000, help="photos to generate and pack")
    p.add_argument("--classes", type=int, default=6,
                   help="classes (folders) the photos are spread over; one label each")
    p.add_argument("--shards", type=int, default=4, help=".rec/.idx shards im2rec writes")
    p.add_argument("--ranks", type=int, default=2,
                   help="training processes (torch.distributed, gloo on CPU), one partition each")
    p.add_argument("--epochs", type=int, default=2, help="passes over the data")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch and rank")
    p.add_argument("--threads", type=int, default=2, help="ImageRecordIter preprocess_threads per rank")
    p.add_argument("--sheet", default=None,
                   help="where to write the contact sheet PNG (default: WORKDIR/first_batch.png)")
    p.add_argument("--bucket", default=None,
                   help="use this s3:// URL instead of a loopback server (AWS_* credentials)")
    p.add_argument("--endpoint-url", default=os.environ.get("CLOUDREC_S3_ENDPOINT"),
                   help="S3 endpoint for --bucket (default: $CLOUDREC_S3_ENDPOINT, else AWS)")
    p.add_argument("--no-torch", action="store_true",
                   help="only iterate the batches, even if torch is installed")
    p.set_defaults(func=run)
