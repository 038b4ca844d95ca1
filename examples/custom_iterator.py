"""A custom iterator built on cloudrec.io.DataIter — MXNet's third way to load
images — reading a `.rec` from any URL with MXIndexedRecordIO.

    python examples/custom_iterator.py DATA.rec [--idx DATA.idx] [--batch-size 8]

It yields NCHW float32 batches of centre-cropped images and scalar labels and
reports `pad` for the last, short batch, as MXNet iterators do.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional

import cv2
import numpy as np

from cloudrec.io import DataBatch, DataDesc, DataIter
from cloudrec.recordio import MXIndexedRecordIO, unpack


class CenterCropRecordIter(DataIter):
    """Reads records in `.idx` order, decodes, centre-crops to ``size`` and batches."""

    def __init__(self, rec: str, idx: str, batch_size: int, size: int = 32,
                 storage_options: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(batch_size)
        self.record = MXIndexedRecordIO(idx, rec, "r", storage_options=storage_options)
        self.size = size
        self.cursor = 0
        self.provide_data = [DataDesc("data", (batch_size, 3, size, size))]
        self.provide_label = [DataDesc("softmax_label", (batch_size,))]

    def reset(self) -> None:
        self.cursor = 0

    def _load(self, key) -> tuple:
        header, img_bytes = unpack(self.record.read_idx(key))
        img = cv2.imdecode(np.frombuffer(img_bytes, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"record {key} of {self.record.uri} is not an image")
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        label = header.label if header.flag == 0 else header.label[0]
        return img[..., ::-1].transpose(2, 0, 1).astype(np.float32), float(label)

    def next(self) -> DataBatch:
        keys = self.record.keys
        if self.cursor >= len(keys):
            raise StopIteration
        chosen = keys[self.cursor:self.cursor + self.batch_size]
        pad = self.batch_size - len(chosen)
        chosen = chosen + keys[:pad]  # MXNet's "pad": fill from the start, report it
        self.cursor += self.batch_size
        imgs, labels = zip(*(self._load(k) for k in chosen))
        return DataBatch(data=[np.stack(imgs)], label=[np.asarray(labels, np.float32)],
                         pad=pad, index=np.asarray(chosen))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rec")
    ap.add_argument("--idx", default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args(argv)
    idx = a.idx or os.path.splitext(a.rec)[0] + ".idx"
    it = CenterCropRecordIter(a.rec, idx, a.batch_size)
    n = 0
    for batch in it:
        n += batch.data[0].shape[0] - batch.pad
        print(f"batch data {batch.data[0].shape} labels {batch.label[0].tolist()} pad {batch.pad}")
    print(f"read {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
