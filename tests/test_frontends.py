"""One contract for every front end built on the iterator core (issue #12's acceptance).

Each front end (ImageRecordIter, ImageIter, ImageDetIter, SegmentationIter and the
three torch datasets) is driven through a small adapter, and the same tests check:
exactly once per epoch over ranks (x DataLoader workers), the exact next batch after
a resume on the same world size, every remaining record exactly once after a resume
on another world size, the pixel limit refused with a cloudrec error naming file and
record, and no descriptor or thread left behind by a dropped iterator.
"""
from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import cv2
import numpy as np
import pytest

import cloudrec.image as cimage
from cloudrec.errors import CloudrecError
from cloudrec.format.irheader import IRHeader, pack
from cloudrec.image.det_labels import make_det_label
from cloudrec.image.segmentation import pack_seg
from cloudrec.recordio import MXIndexedRecordIO

N = 22  # records: not a multiple of any batch x world size used below


def _png(i: int, h: int = 12, w: int = 12) -> bytes:
    # a distinct value at every pixel: another crop offset or a mirror changes the batch,
    # so the resume tests compare the augmentations, not just flat images
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (i * 11 + 7 * xx + 3 * yy) % 256
    img[..., 1] = (5 * xx * xx + 11 * yy) % 256
    img[..., 2] = (13 * yy + xx + i) % 256
    img[0, 0] = (i, 255 - i, 7)
    return cv2.imencode(".png", img)[1].tobytes()


def _write(path, payloads):
    rec, idx = str(path) + ".rec", str(path) + ".idx"
    w = MXIndexedRecordIO(idx, rec, "w")
    for i, p in enumerate(payloads):
        w.write_idx(i, p)
    w.close()
    return rec, idx


def plain_payloads():
    return [pack(IRHeader(0, float(i), i, 0), _png(i)) for i in range(N)]


def det_payloads():
    out = []
    for i in range(N):
        objs = [[i % 3, 0.1, 0.1, 0.6, 0.7]]
        out.append(pack(IRHeader(0, make_det_label(objs), i, 0), _png(i)))
    return out


def seg_payloads():
    out = []
    for i in range(N):
        img = np.full((12, 12, 3), (i * 11) % 256, np.uint8)
        mask = np.full((12, 12), i % 5, np.uint8)
        out.append(pack_seg(img, mask, id=i, extra=[i], img_fmt=".png"))
    return out


@dataclass
class FrontEnd:
    """How to build one front end on part ``rank`` of ``world`` and read its batches."""

    name: str
    payloads: Callable[[], List[bytes]]
    make: Callable[..., Any]
    batches: Callable[[Any], List[Dict[str, Any]]]   # [{"ids": real ids, "data": array}]
    take: Callable[[Any, int], List[Dict[str, Any]]]  # the next k batches
    close: Callable[[Any], None]
    batch: int = 3


def _mx_batches(it, limit=None):
    out = []
    for b in it:
        n = len(b.data[0]) - int(b.pad or 0)
        ids = getattr(b, "record_ids", None)
        if ids is None:
            ids = b.index
        out.append({"ids": [int(x) for x in np.asarray(ids)[:n]], "data": b.data[0][:n].copy()})
        if limit is not None and len(out) >= limit:
            break
    return out


def _mx_take(it, k):
    return [] if k == 0 else _mx_batches(it, k)


def _iri(rec, idx, rank, world, **kw):
    from cloudrec.iterators import ImageRecordIter
    return ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 8, 8), batch_size=3,
                           shuffle=True, seed=5, shuffle_mode="global", num_parts=world,
                           part_index=rank, part_mode="even", rand_crop=True, rand_mirror=True,
                           preprocess_threads=2, **kw)


def _ii(rec, idx, rank, world, **kw):
    from cloudrec.iterators import ImageIter
    return ImageIter(3, (3, 8, 8), path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=5,
                     num_parts=world, part_index=rank, part_mode="even", rand_crop=True,
                     rand_mirror=True, num_threads=2, **kw)


def _det(rec, idx, rank, world, **kw):
    from cloudrec.iterators import ImageDetIter
    return ImageDetIter(3, (3, 8, 8), path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=5,
                        num_parts=world, part_index=rank, part_mode="even", num_threads=2,
                        label_shape=(2, 5), **kw)


def _seg(rec, idx, rank, world, **kw):
    from cloudrec.iterators import SegmentationIter
    return SegmentationIter(3, (3, 8, 8), rec, idx, shuffle=True, seed=5, num_parts=world,
                            part_index=rank, rand_crop=True, rand_mirror=True, **kw)


def _close(it):
    it.close()


# ----- the torch datasets, read through their resumable loaders with 2 DataLoader workers
def _torch_batches(loader, limit=None):
    out = []
    for b in loader:
        keep = ~b["is_pad"].numpy()
        data = b["data"][0] if isinstance(b["data"], (tuple, list)) else b["data"]
        out.append({"ids": [int(x) for x in b["ids"].numpy()[keep]],
                    "data": np.asarray(data)[keep].copy()})
        if limit is not None and len(out) >= limit:
            break
    return out


def _torch_take(loader, k):
    return [] if k == 0 else _torch_batches(loader, k)


def _rids(rec, idx, rank, world, **kw):
    from cloudrec.torch import RecordIterableDataset, ResumableLoader
    ds = RecordIterableDataset(rec, batch_size=3, seed=5, mode="global", rank=rank,
                               world_size=world, **kw)
    return ResumableLoader(ds, num_workers=2)


def _trds(rec, idx, rank, world, **kw):
    from cloudrec.torch import ImageRecordDataset, ResumableLoader
    ds = ImageRecordDataset(rank=rank, world_size=world, path_imgrec=rec, path_imgidx=idx,
                            data_shape=(3, 8, 8), batch_size=3, shuffle=True, seed=5,
                            shuffle_mode="global", rand_crop=True, rand_mirror=True,
                            preprocess_threads=1, prefetch_buffer=1, **kw)
    return ResumableLoader(ds, num_workers=2)


def _irds(rec, idx, rank, world, **kw):
    from cloudrec.torch import IndexedRecordDataset, ResumableMapLoader
    ds = IndexedRecordDataset(idx, rec)
    return ResumableMapLoader(ds, batch_size=3, seed=5, mode="global", rank=rank,
                              world_size=world, loader_kw={"num_workers": 2})


def _noop(loader):
    pass


FRONTS = [
    FrontEnd("ImageRecordIter", plain_payloads, _iri, _mx_batches, _mx_take, _close),
    FrontEnd("ImageIter", plain_payloads, _ii, _mx_batches, _mx_take, _close),
    FrontEnd("ImageDetIter", det_payloads, _det, _mx_batches, _mx_take, _close),
    FrontEnd("SegmentationIter", seg_payloads, _seg, _mx_batches, _mx_take, _close),
]
try:
    import torch  # noqa: F401  (the optional torch extra; CI installs it)
    FRONTS += [
        FrontEnd("RecordIterableDataset", plain_payloads, _rids, _torch_batches, _torch_take,
                 _noop),
        FrontEnd("ImageRecordDataset", plain_payloads, _trds, _torch_batches, _torch_take,
                 _noop),
        FrontEnd("IndexedRecordDataset", plain_payloads, _irds, _torch_batches, _torch_take,
                 _noop),
    ]
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(params=FRONTS, ids=lambda f: f.name)
def front(request):
    return request.param


@pytest.fixture
def data(tmp_path, front):
    return _write(tmp_path / front.name, front.payloads())


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_exactly_once_per_epoch_over_ranks(front, data, world):
    seen, counts = [], []
    for rank in range(world):
        it = front.make(*data, rank, world)
        try:
            bs = front.batches(it)
        finally:
            front.close(it)
        counts.append(len(bs))
        seen += [i for b in bs for i in b["ids"]]
    assert sorted(seen) == list(range(N))
    assert len(set(counts)) == 1  # equal batch counts on every rank


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_resume_same_world_gives_the_exact_next_batches(front, data, k):
    it = front.make(*data, 1, 2)
    try:
        full = front.batches(it)
    finally:
        front.close(it)
    it = front.make(*data, 1, 2)
    try:
        front.take(it, k)
        state = it.state_dict()
    finally:
        front.close(it)
    it = front.make(*data, 1, 2)
    try:
        it.load_state_dict(state)
        rest = front.batches(it)
    finally:
        front.close(it)
    assert [b["ids"] for b in rest] == [b["ids"] for b in full[k:]]
    for a, b in zip(rest, full[k:]):  # same pixels: augmentation is a function of the record
        np.testing.assert_array_equal(a["data"], b["data"])


@pytest.mark.parametrize("old,new,k", [(2, 3, 1), (2, 3, 2), (3, 2, 1), (2, 1, 3), (1, 4, 2),
                                       (4, 2, 1)])
def test_resume_on_another_world_reads_every_remaining_record_once(front, data, old, new, k):
    before, state = [], None
    for rank in range(old):  # every rank stops after k batches; all save the same state
        it = front.make(*data, rank, old)
        try:
            before += [i for b in front.take(it, k) for i in b["ids"]]
            st = it.state_dict()
        finally:
            front.close(it)
        state = state or st
        assert st["consumed"] == state["consumed"] and st["epoch"] == state["epoch"]
    after = []
    for rank in range(new):
        it = front.make(*data, rank, new)
        try:
            it.load_state_dict(state)
            after += [i for b in front.batches(it) for i in b["ids"]]
        finally:
            front.close(it)
    assert len(before) == len(set(before))
    assert sorted(before + after) == list(range(N))


def test_an_image_over_the_pixel_limit_names_file_and_record(front, data):
    old = cimage.get_max_pixels()
    cimage.set_max_pixels(100)  # the records are 12 x 12 = 144 pixels
    try:
        it = None
        with pytest.raises(CloudrecError) as info:
            it = front.make(*data, 0, 1)
            front.batches(it)
        msg = str(info.value)
        assert "over the limit of 100" in msg and "144" in msg
        assert os.path.basename(data[0]) in msg  # the file
        assert "key" in msg or "record" in msg or "index" in msg  # and the record
    finally:
        cimage.set_max_pixels(old)
        if it is not None:
            front.close(it)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_dropped_iterator_leaves_no_descriptor_or_thread(front, data):
    front.close(front.make(*data, 0, 1))  # warm imports and lazy pools
    gc.collect()
    fds, threads = _fds(), threading.active_count()
    for _ in range(5):
        it = front.make(*data, 0, 1)
        front.take(it, 1)
        del it  # never closed, as MXNet-style code does
    gc.collect()
    deadline = time.monotonic() + 10
    while (threading.active_count() > threads or _fds() > fds) and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    left = sorted(os.readlink(f"/proc/self/fd/{f}") for f in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{f}"))
    assert _fds() <= fds, "\n".join(left)
    assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]


TABLE_FRONTS = [f for f in FRONTS if f.name != "IndexedRecordDataset"]   # it reads one .idx/.rec
# pair through MXIndexedRecordIO (no RecordFetcher, so no fetch_options)


@pytest.mark.parametrize("front", TABLE_FRONTS, ids=lambda f: f.name)
def test_a_dataset_table_with_record_crcs_serves_every_front_end(front, tmp_path):
    """fetch_options={"table": T}: the same batches as from the .idx, each record checked;
    a byte changed in a record after the table was written is a ChecksumMismatchError."""
    from cloudrec.dataset.table_file import write_table
    from cloudrec.errors import ChecksumMismatchError
    rec, idx = _write(tmp_path / front.name, front.payloads())
    table = str(tmp_path / "t.crtable")
    write_table([rec], table, crc=True)
    want = front.batches(it := front.make(rec, idx, 0, 1))
    front.close(it)
    got = front.batches(it := front.make(rec, idx, 0, 1, fetch_options={"table": table}))
    front.close(it)
    assert [b["ids"] for b in got] == [b["ids"] for b in want]
    assert all(np.array_equal(np.asarray(a["data"]), np.asarray(b["data"])) for a, b in zip(got, want))
    st = os.stat(rec)
    with open(rec, "r+b") as fh:          # one byte of record 7's image, size and mtime kept
        from cloudrec.dataset import open_dataset
        t = open_dataset(rec).table
        fh.seek(int(t.offset[7]) + 40)
        b = fh.read(1)
        fh.seek(int(t.offset[7]) + 40)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(rec, ns=(st.st_atime_ns, st.st_mtime_ns))
    it = front.make(rec, idx, 0, 1, fetch_options={"table": table})
    with pytest.raises(ChecksumMismatchError, match="record id 7 ") as ei:
        front.batches(it)
    ei.value.__traceback__ = None   # its frames hold a DataLoader iterator and its workers
    del ei
    front.close(it)
    del it
    gc.collect()
