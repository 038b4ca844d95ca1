"""Every example and the demo run here, against the loopback servers, with short settings."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIX = ROOT / "tests" / "fixtures" / "mxnet"
BIN = Path(sys.executable).parent


def run(cmd, env=None, timeout=300) -> str:
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{BIN}:{full_env.get('PATH', '')}"
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def s3_env(server) -> dict:
    return {"AWS_ENDPOINT_URL": server.endpoint_url, "CLOUDREC_S3_ENDPOINT": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def test_custom_iterator_example():
    out = run([sys.executable, str(EXAMPLES / "custom_iterator.py"),
               str(FIX / "pack" / "passthrough" / "all.rec"), "--batch-size", "10"])
    assert "read 24 images" in out
    assert out.count("batch data (10, 3, 32, 32)") == 3 and "pad 6" in out


def test_port_legacy_mxnet_example_s3(s3_server):
    bucket = s3_server.new_bucket()
    out = run([sys.executable, str(EXAMPLES / "port_legacy_mxnet.py"), bucket + "/faces", "--make",
               "--endpoint-url", s3_server.endpoint_url], env=s3_env(s3_server))
    assert "read 12 faces of shape (112, 112, 3)" in out
    assert "labels [1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0]" in out


def test_pack_folder_to_s3_example(s3_server):
    bucket = s3_server.new_bucket()
    out = run(["bash", str(EXAMPLES / "pack_folder_to_s3.sh"), str(FIX / "images"),
               bucket + "/train", "3"], env=s3_env(s3_server))
    import fsspec
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(bucket))
    assert names == ["train-00000-of-00003.idx", "train-00000-of-00003.rec",
                     "train-00001-of-00003.idx", "train-00001-of-00003.rec",
                     "train-00002-of-00003.idx", "train-00002-of-00003.rec", "train.lst",
                     "train.manifest.json"]  # written last: the pack is complete
    assert "24" in out  # inspect reports the record count


def test_train_from_s3_example(s3_server):
    pytest.importorskip("torch")  # the optional torch extra; CI installs it
    bucket = s3_server.new_bucket()
    import fsspec
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for name in ("all.rec", "all.idx"):
        fs.put_file(str(FIX / "pack" / "passthrough" / name), f"{bucket}/{name}")
    out = run([sys.executable, str(EXAMPLES / "train_from_s3.py"), "--data", f"{bucket}/all.rec",
               "--endpoint-url", s3_server.endpoint_url, "--batch-size", "8", "--size", "32",
               "--steps", "0", "--classes", "3"], env=s3_env(s3_server))
    assert "trained 3 steps on 24 images" in out


def test_demo_runs_end_to_end(tmp_path):
    out = run([str(BIN / "cloudrec"), "demo", "--images", "120", "--classes", "3", "--shards", "2",
               "--batch-size", "16", "--workdir", str(tmp_path)], timeout=600)
    summary = [ln for ln in out.splitlines() if ln.startswith("demo summary:")]
    assert summary, out[-2000:]
    assert "240 images" in summary[0] and "ranks=2" in summary[0] and "epochs=2" in summary[0]
    sheet = cv2.imread(str(tmp_path / "first_batch.png"))
    assert sheet is not None and sheet.shape[0] > 64 and sheet.std() > 10
