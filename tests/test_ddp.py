"""examples/ddp_torchrun.py under ``torchrun --nproc_per_node=2`` (CPU, gloo): disjoint, complete ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from cloudrec.testing.servers import free_ports  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ddp_torchrun.py"


def torchrun(args, tmp_path, env_extra=None, nproc=2):
    torchrun_bin = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun_bin)] if torchrun_bin.exists() else [sys.executable, "-m", "torch.distributed.run"]
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    p = subprocess.run(cmd + [f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
                              f"--master_port={free_ports(1)[0]}", str(EXAMPLE), *args,
                              "--report", str(report)],
                       capture_output=True, text=True, timeout=240, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(report.read_text()), p.stdout


def check(report, n, epochs, batch_size):
    assert report["world_size"] == 2 and report["records"] == n
    steps = -(-n // (2 * batch_size))
    orders = []
    for e in range(epochs):
        ep = report["epochs"][str(e)]
        assert ep["steps"] == [steps, steps]                       # equal batch counts per rank
        r0, r1 = ep["per_rank"]["0"], ep["per_rank"]["1"]
        assert not set(r0) & set(r1)                               # disjoint ranks
        assert sorted(r0 + r1) == list(range(n))                   # covering the dataset, once
        assert ep["disjoint"] and ep["complete"]
        orders.append(r0)
    assert len({tuple(o) for o in orders}) == epochs               # epochs differ
    assert all(l == l and l < 10 for l in report["losses"])        # finite losses, training ran


def test_torchrun_two_ranks_on_a_local_dataset(tmp_path):
    report, out = torchrun(["--data", str(tmp_path / "train"), "--make-data", "50", "--epochs", "2",
                            "--batch-size", "4", "--num-workers", "2"], tmp_path)
    check(report, 50, 2, 4)
    assert "complete=True" in out


@pytest.mark.s3
def test_torchrun_two_ranks_from_loopback_s3(tmp_path, s3_server):
    bucket = s3_server.new_bucket()
    report, _ = torchrun(["--data", f"{bucket}/train", "--make-data", "41", "--epochs", "2",
                          "--batch-size", "3", "--num-workers", "1", "--mode", "global"], tmp_path,
                         {"CLOUDREC_S3_ENDPOINT": s3_server.endpoint_url,
                          "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    check(report, 41, 2, 3)
    # the shards really are in the bucket
    fs = s3_server.filesystem()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(bucket[5:])) == [
        f"train-000{i}.{x}" for i in range(3) for x in ("idx", "rec")]


def test_stop_with_two_ranks_resume_with_one_in_a_fresh_torchrun(tmp_path):
    from cloudrec.reader.orders import epoch_order
    from cloudrec.dataset import open_dataset

    data = str(tmp_path / "train")
    state = str(tmp_path / "state.json")
    common = ["--batch-size", "3", "--num-workers", "2", "--epochs", "2", "--mode", "block"]
    first, _ = torchrun(["--data", data, "--make-data", "40", "--steps", "2", "--epochs", "1",
                         "--save-state", state] + common[:-4], tmp_path)
    saved = json.loads(Path(state).read_text())
    assert saved["epoch"] == 0 and saved["consumed"] == 2 * 2 * 3   # 2 steps x 2 ranks x 3
    second, _ = torchrun(["--data", *[f"{data}-{i:04d}.rec" for i in range(3)], "--load-state", state]
                         + common, tmp_path, nproc=1)
    assert second["world_size"] == 1
    ep0_first = first["epochs"]["0"]["per_rank"]
    ep0_second = second["epochs"]["0"]["per_rank"]["0"]
    # each rank's first 2 batches (its 2 workers' first spans), then the single rank's continuation:
    # every record of epoch 0 exactly once
    seen = []
    for r in ("0", "1"):
        seen += ep0_first[r][:6]
    seen += ep0_second
    assert sorted(seen) == list(range(40)) and saved["layout"] == [2, 2, 3, "pad"]
    ds = open_dataset([f"{data}-{i:04d}.rec" for i in range(3)])
    order = epoch_order(ds.table, 0, 0, "block", block_size=8).tolist()
    # rank 0 owns the first 20 positions of the order (7 batches, 1 pad): worker 0 its batches
    # 0, 2, 4, 6 from the first 11, worker 1 its batches 1, 3, 5 from the next 9
    assert ep0_first["0"][:6] == order[:3] + order[11:14]
    assert sorted(second["epochs"]["1"]["per_rank"]["0"]) == list(range(40))
