"""Train a tiny CNN with DistributedDataParallel (CPU, gloo) straight from a RecordIO dataset.

    torchrun --nproc_per_node=2 examples/ddp_torchrun.py \\
        --data 's3://bucket/train-{0000..0002}.rec' --endpoint-url http://127.0.0.1:5000

``--data`` is any URL, list, glob or brace range ``open_dataset`` takes (a
local path works too); the S3 endpoint comes from ``--endpoint-url`` or
CLOUDREC_S3_ENDPOINT / AWS_ENDPOINT_URL. ``--make-data N`` first writes N tiny
labelled JPEGs as 3 shards ``<data>-000i.rec`` (rank 0 only). Every rank reads
its own share of each epoch; at the end the ranks ``all_gather`` the record
ids they saw and rank 0 checks that they are disjoint and cover the dataset
(``--report`` writes that as JSON). ``--save-state`` / ``--load-state`` stop
and resume mid-epoch, also with another number of ranks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cloudrec.dataset import open_dataset
from cloudrec.format.irheader import IRHeader
from cloudrec.recordio import MXIndexedRecordIO, pack_img
from cloudrec.torch import RecordIterableDataset, ResumableLoader

NUM_CLASSES = 5


def storage_options(endpoint: str | None) -> dict:
    if not endpoint:
        return {}
    return {"key": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def shard_urls(prefix: str, shards: int) -> list:
    return [f"{prefix}-{s:04d}.rec" for s in range(shards)]


def make_data(prefix: str, n: int, shards: int, so: dict) -> None:
    """N tiny JPEGs whose colour encodes the class; label = [class, uid], key = uid."""
    rng = np.random.default_rng(0)
    per = -(-n // shards)
    for s, rec in enumerate(shard_urls(prefix, shards)):
        with MXIndexedRecordIO(rec[:-4] + ".idx", rec, "w", storage_options=so) as w:
            for uid in range(s * per, min(n, (s + 1) * per)):
                cls = uid % NUM_CLASSES
                img = np.clip(rng.normal(40 + 40 * cls, 10, (16, 16, 3)), 0, 255).astype(np.uint8)
                w.write_idx(uid, pack_img(IRHeader(2, np.array([cls, uid], np.float32), uid, 0), img))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env_data = os.environ.get("CLOUDREC_DATA")
    ap.add_argument("--data", nargs="+", default=[env_data] if env_data else None, required=not env_data,
                    help="dataset URL(s), glob or brace range; with --make-data a shard prefix")
    ap.add_argument("--endpoint-url", default=os.environ.get("CLOUDREC_S3_ENDPOINT")
                    or os.environ.get("AWS_ENDPOINT_URL"))
    ap.add_argument("--make-data", type=int, default=0, metavar="N")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="stop each epoch after this many steps (0: whole epoch)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--mode", default="block", choices=["global", "block", "shard", "none"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--report", default=None, help="rank 0 writes the gathered coverage here (JSON)")
    ap.add_argument("--save-state", default=None, help="rank 0 writes the loader state here at the end")
    ap.add_argument("--load-state", default=None, help="resume from a saved loader state (any world size)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    so = storage_options(a.endpoint_url)
    data = a.data[0] if len(a.data) == 1 else a.data
    if a.make_data:
        if rank == 0:
            make_data(a.data[0], a.make_data, 3, so)
        dist.barrier()
        data = shard_urls(a.data[0], 3)
    ds = open_dataset(data, storage_options=so)
    rds = RecordIterableDataset(ds, seed=a.seed, mode=a.mode, batch_size=a.batch_size, last="pad",
                                order_options={"block_size": 8})   # rank/world from torch.distributed
    loader = ResumableLoader(rds, num_workers=a.num_workers, persistent_workers=a.num_workers > 0)

    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, NUM_CLASSES)))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    report = {"world_size": world, "records": len(ds), "epochs": {}, "losses": []}
    first_epoch = 0
    if a.load_state:
        with open(a.load_state) as f:
            loader.load_state_dict(json.load(f))
        first_epoch = loader.state_dict()["epoch"]
    for epoch in range(first_epoch, a.epochs):
        loader.set_epoch(epoch)
        seen, steps = [], 0
        for batch in loader:
            img, label = batch["data"]
            x = img.permute(0, 3, 1, 2).float().div_(255)
            y = label[:, 0].long()
            weight = (~batch["is_pad"]).float()            # padding repeats records: no gradient
            loss = (nn.functional.cross_entropy(model(x), y, reduction="none") * weight).sum() \
                / weight.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen.extend(batch["ids"][~batch["is_pad"]].tolist())
            report["losses"].append(float(loss.detach()))
            steps += 1
            if a.steps and steps >= a.steps:
                break
        gathered = [None] * world
        dist.all_gather_object(gathered, {"rank": rank, "ids": seen, "steps": steps})
        if rank == 0:
            all_ids = [i for g in gathered for i in g["ids"]]
            report["epochs"][epoch] = {
                "per_rank": {g["rank"]: g["ids"] for g in gathered},
                "steps": [g["steps"] for g in gathered],
                "disjoint": len(all_ids) == len(set(all_ids)),
                "complete": sorted(all_ids) == list(range(len(ds))),
            }
            print(f"epoch {epoch}: steps per rank {[g['steps'] for g in gathered]}, "
                  f"{len(all_ids)} records, disjoint={report['epochs'][epoch]['disjoint']}, "
                  f"complete={report['epochs'][epoch]['complete']}, last loss {report['losses'][-1]:.3f}",
                  flush=True)
    ok = True
    if rank == 0:
        partial = a.steps or a.load_state
        ok = all(e["disjoint"] and (partial or e["complete"]) for e in report["epochs"].values())
        report["state"] = loader.state_dict()
        if a.save_state:
            with open(a.save_state, "w") as f:
                json.dump(loader.state_dict(), f)
        if a.report:
            with open(a.report, "w") as f:
                json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
