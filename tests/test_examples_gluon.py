"""examples/gluon_imagenet_rec.py (GluonCV's ImageNet record loaders, ported by changing the
imports) runs end to end: locally through both loaders, and from S3 (moto on 127.0.0.1)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gluon_imagenet_rec.py"


def run(args, env=None, timeout=300) -> str:
    full = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, str(EXAMPLE), *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _val_acc(out: str) -> list:
    return [float(x) for x in re.findall(r"val-acc ([0-9.]+) \(12 images\)", out)]


def test_gluon_imagenet_example_both_loaders(tmp_path):
    root = str(tmp_path / "inet")
    out = run([root, "--make", "--loader", "rec", "--epochs", "2", "--num-workers", "1"])
    assert "trained 2 epochs, 96 images through rec" in out  # 48 train images x 2 epochs
    accs = _val_acc(out)
    assert len(accs) == 2 and accs[-1] >= 0.9  # the classes (colours) are learnable
    assert sorted(os.listdir(root)) == ["train.idx", "train.rec", "val.idx", "val.rec"]
    out = run([root, "--loader", "gluon", "--epochs", "2", "--num-workers", "2"])
    assert "trained 2 epochs, 96 images through gluon" in out  # last_batch='discard': 6 x 8
    accs = _val_acc(out)
    assert len(accs) == 2 and accs[-1] >= 0.9


def test_gluon_imagenet_example_from_s3(s3_server):
    bucket = s3_server.new_bucket()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    out = run([f"{bucket}/inet", "--make", "--loader", "gluon", "--epochs", "1",
               "--endpoint-url", s3_server.endpoint_url], env=env)
    assert "trained 1 epochs, 48 images through gluon" in out
    import fsspec
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/inet")) == [
        "train.idx", "train.rec", "val.idx", "val.rec"]
