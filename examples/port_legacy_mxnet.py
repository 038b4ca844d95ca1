"""Porting an InsightFace-style face loader off MXNet by changing one import.

The class below is InsightFace's ``MXFaceDataset`` as written for MXNet; the
only edit is the import line (``import mxnet as mx`` became the cloudrec one).
``mx.storage_options`` lets the same code read from S3 without further edits.

    python examples/port_legacy_mxnet.py DIR_WITH_train.rec_AND_train.idx
    python examples/port_legacy_mxnet.py s3://bucket/faces --endpoint-url http://127.0.0.1:PORT
"""
from __future__ import annotations

import argparse
import numbers
import os

import numpy as np

from cloudrec import mxnet_compat as mx  # was: import mxnet as mx


class MXFaceDataset:
    """Face recognition records: record 0 holds (first image id, end) in its label."""

    def __init__(self, root_dir, transform=None):
        self.transform = transform
        path_imgrec = os.path.join(root_dir, "train.rec")
        path_imgidx = os.path.join(root_dir, "train.idx")
        self.imgrec = mx.recordio.MXIndexedRecordIO(path_imgidx, path_imgrec, "r")
        s = self.imgrec.read_idx(0)
        header, _ = mx.recordio.unpack(s)
        if header.flag > 0:
            self.header0 = (int(header.label[0]), int(header.label[1]))
            self.imgidx = np.array(range(1, int(header.label[0])))
        else:
            self.imgidx = np.array(list(self.imgrec.keys))

    def __getitem__(self, index):
        idx = self.imgidx[index]
        s = self.imgrec.read_idx(idx)
        header, img = mx.recordio.unpack(s)
        label = header.label
        if not isinstance(label, numbers.Number):
            label = label[0]
        label = int(label)
        sample = mx.image.imdecode(img).asnumpy()
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, label

    def __len__(self):
        return len(self.imgidx)


def write_demo_faces(root: str, n: int = 12, identities: int = 3, storage_options=None) -> None:
    """Write a tiny dataset in InsightFace's layout (header record 0, images 1..n)."""
    import cv2

    rec = mx.recordio.MXIndexedRecordIO(os.path.join(root, "train.idx"),
                                        os.path.join(root, "train.rec"), "w",
                                        storage_options=storage_options)
    rec.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(2, [n + 1, n + 1 + identities], 0, 0), b""))
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        ok, jpg = cv2.imencode(".jpg", face)
        rec.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, [i % identities, 0], i, 0),
                                          jpg.tobytes()))
    rec.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder or URL holding train.rec and train.idx")
    ap.add_argument("--endpoint-url", default=os.environ.get("CLOUDREC_S3_ENDPOINT"))
    ap.add_argument("--make", action="store_true", help="write a tiny demo dataset there first")
    a = ap.parse_args(argv)
    if a.endpoint_url:
        mx.storage_options.update(client_kwargs={"endpoint_url": a.endpoint_url})
    if a.make:
        write_demo_faces(a.root)
    ds = MXFaceDataset(a.root)
    labels = []
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.shape == (112, 112, 3), img.shape
        labels.append(label)
    print(f"read {len(ds)} faces of shape (112, 112, 3), labels {labels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
