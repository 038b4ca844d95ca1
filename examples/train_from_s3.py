"""Train a small PyTorch model straight from `.rec` shards in S3 (or any URL).

    python examples/train_from_s3.py --data 's3://bucket/train-*.rec' \
        --endpoint-url http://127.0.0.1:5555 --steps 20

ImageRecordIter reads the shards with planned ranged reads (optionally into
the local shard cache with --cache auto), decodes and augments in threads, and
hands NCHW float32 batches to torch without copying (torch.from_numpy).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help=".rec URL, glob or brace range")
    ap.add_argument("--endpoint-url", default=os.environ.get("CLOUDREC_S3_ENDPOINT"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50, help="stop after this many steps (0: 1 epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="none", choices=["none", "shards", "auto"])
    a = ap.parse_args(argv)

    import torch
    import torch.nn as nn

    from cloudrec.iterators import ImageRecordIter

    opts = {"client_kwargs": {"endpoint_url": a.endpoint_url}} if a.endpoint_url else {}
    it = ImageRecordIter(path_imgrec=a.data, data_shape=(3, a.size, a.size),
                         batch_size=a.batch_size, shuffle=True, rand_crop=True, rand_mirror=True,
                         mean_r=123.68, mean_g=116.779, mean_b=103.939,
                         std_r=58.395, std_g=57.12, std_b=57.375,
                         preprocess_threads=a.threads, storage_options=opts, cache=a.cache)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, a.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    steps, images, losses = 0, 0, []
    t0 = time.perf_counter()
    with it:
        for batch in it:
            x = torch.from_numpy(batch.data[0])  # shares memory with the batch buffer
            y = torch.from_numpy(batch.label[0].astype(np.int64))
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            steps += 1
            images += x.shape[0] - batch.pad
            if a.steps and steps >= a.steps:
                break
    dt = time.perf_counter() - t0
    print(f"trained {steps} steps on {images} images in {dt:.1f}s ({images / dt:.0f} images/s); "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
