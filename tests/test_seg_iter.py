"""SegmentationIter over image+mask records on local disk and remote stores."""
from __future__ import annotations

import numpy as np
import pytest

from cloudrec.dataset.synthetic import build_shard
from cloudrec.errors import ConfigError, LabelError
from cloudrec.format.irheader import IRHeader, pack
from cloudrec.image.seg_augmenters import SegForceResizeAug, SegHorizontalFlipAug
from cloudrec.image.segmentation import pack_seg
from cloudrec.iterators.segmentation import SegmentationIter, write_seg_records

from test_seg_augment import PALETTE, assert_aligned, synthetic

N = 11


def make_records(n=N, size=(48, 64)):
    """Payloads whose image paints its mask (PNG, lossless); record i has extra label i."""
    payloads, masks = [], []
    for i in range(n):
        image, mask = synthetic(size[0] + (i % 3) * 4, size[1] + (i % 2) * 8, seed=i)
        masks.append(mask)
        payloads.append(pack_seg(image[:, :, ::-1].copy(), mask, id=i, extra=[i],
                                 img_fmt=".png"))
    return payloads, masks


def write(store, payloads, name="seg"):
    rec, idx = build_shard(payloads, list(range(len(payloads))))
    return store.put(f"{name}.rec", rec), store.put(f"{name}.idx", idx)


def batches(it):
    return [(b.data[0].copy(), b.label[0].copy(), b.pad, np.array(b.index)) for b in it]


def test_iter_local_shapes_alignment_pad_and_epochs(tmp_path):
    from cloudrec.testing.stores import local_store
    store = local_store(tmp_path / "s")
    payloads, masks = make_records()
    rec, idx = write(store, payloads)
    it = SegmentationIter(4, (3, 32, 40), rec, idx, rand_crop=True, rand_mirror=True,
                          rand_scale=(0.7, 1.4), inter_method=0, seed=3)
    assert it.provide_data[0].shape == (4, 3, 32, 40)
    assert it.provide_label[0].shape == (4, 32, 40)
    assert len(it) == 3
    ep0 = batches(it)
    assert len(ep0) == 3 and [b[2] for b in ep0] == [0, 0, 1]
    ids = np.concatenate([b[3] for b in ep0])
    assert ids.tolist() == list(range(N)) + [0]  # no shuffle: record order, padded from start
    for data, mask, _pad, _ in ep0:
        assert data.dtype == np.float32 and mask.dtype == np.int32
        for img, m in zip(data, mask):
            assert_aligned(img.transpose(1, 2, 0).astype(np.uint8), m, exact=True)
    with pytest.raises(StopIteration):
        it.next()
    # a second epoch: new augmentation draws, same records
    it.reset()
    ep1 = batches(it)
    assert np.concatenate([b[3] for b in ep1]).tolist() == ids.tolist()
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(ep0, ep1))
    # the same seed repeats exactly, also with another thread count
    it2 = SegmentationIter(4, (3, 32, 40), rec, idx, rand_crop=True, rand_mirror=True,
                           rand_scale=(0.7, 1.4), inter_method=0, seed=3,
                           preprocess_threads=1)
    for a, b in zip(ep0, batches(it2)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    it.close()
    it2.close()


def test_iter_center_crop_recovers_the_masks(tmp_path):
    """Without random geometry the batch holds exactly the centre crops of the stored masks."""
    from cloudrec.testing.stores import local_store
    store = local_store(tmp_path / "s")
    payloads, masks = make_records(5, size=(40, 40))
    rec, idx = write(store, payloads)
    it = SegmentationIter(5, (3, 40, 40), rec, idx, inter_method=0, mask_dtype=np.uint8)
    (data, label, pad, index), = batches(it)
    assert pad == 0 and label.dtype == np.uint8
    for i in range(5):
        m = masks[i]
        h, w = m.shape
        y0, x0 = (h - 40) // 2, (w - 40) // 2
        np.testing.assert_array_equal(label[i], m[y0:y0 + 40, x0:x0 + 40])
        np.testing.assert_array_equal(data[i].transpose(1, 2, 0),
                                      PALETTE[m[y0:y0 + 40, x0:x0 + 40]])


def test_iter_shuffle_partition_discard(tmp_path):
    from cloudrec.testing.stores import local_store
    store = local_store(tmp_path / "s")
    payloads, _ = make_records()
    rec, idx = write(store, payloads)
    seen = []
    for part in range(2):
        it = SegmentationIter(2, (3, 24, 24), rec, idx, shuffle=True, seed=5, part_index=part,
                              num_parts=2, last_batch_handle="discard",
                              aug_list=[SegForceResizeAug((24, 24), 0)])
        e0 = np.concatenate([b[3] for b in batches(it)])
        it.reset()
        e1 = np.concatenate([b[3] for b in batches(it)])
        assert len(e0) == len(e1) == 4   # 11 records, 2 ranks x batch 2: 2 full steps each
        assert sorted(e0) != sorted(e1) or not np.array_equal(e0, e1)
        seen.append(e0)
        it.close()
    both = np.concatenate(seen)
    assert len(set(both.tolist())) == 8  # the ranks never overlap within an epoch


def test_iter_errors_name_the_record(tmp_path):
    from cloudrec.testing.stores import local_store
    store = local_store(tmp_path / "s")
    payloads, _ = make_records(3)
    payloads[1] = pack(IRHeader(0, 1.0, 1, 0), payloads[0][40:])  # a classification record
    rec, idx = write(store, payloads)
    it = SegmentationIter(3, (3, 16, 16), rec, idx, aug_list=[SegForceResizeAug((16, 16))])
    with pytest.raises(LabelError, match=r"not a segmentation record.*seg\.rec.*key 1"):
        it.next()
    it.close()
    payloads, _ = make_records(2)
    rec, idx = write(store, payloads, "ok")
    it = SegmentationIter(2, (3, 16, 16), rec, idx, aug_list=[SegHorizontalFlipAug(0.5)])
    with pytest.raises(ConfigError, match="data_shape"):
        it.next()
    it.close()
    with pytest.raises(ConfigError):
        SegmentationIter(2, (2, 16, 16), rec, idx)
    with pytest.raises(ConfigError):
        SegmentationIter(2, (3, 16, 16), rec, idx, last_batch_handle="roll_over")


def test_iter_on_store(store):
    """The same batches from local disk, S3 and HDFS (reads go through the reader layer)."""
    payloads, masks = make_records(6)
    # written through cloudrec's own writer on the store (MXIndexedRecordIO on any URL)
    samples = [(synthetic(48 + (i % 3) * 4, 64 + (i % 2) * 8, seed=i)[0][:, :, ::-1].copy(),
                masks[i], [i]) for i in range(6)]
    rec, idx = store.url("seg.rec"), store.url("seg.idx")
    assert write_seg_records(rec, samples, storage_options=store.storage_options,
                             img_fmt=".png") == 6
    assert store.get("seg.rec") == build_shard(payloads, list(range(6)))[0]
    it = SegmentationIter(4, (3, 32, 32), rec, idx, storage_options=store.storage_options,
                          rand_crop=True, rand_mirror=True, inter_method=0, seed=9)
    got = batches(it)
    it.close()
    assert [b[2] for b in got] == [0, 2]
    for data, mask, _, _ in got:
        for img, m in zip(data, mask):
            assert_aligned(img.transpose(1, 2, 0).astype(np.uint8), m, exact=True)
    # the same batches as a local copy of the same bytes
    import tempfile
    from cloudrec.testing.stores import local_store
    with tempfile.TemporaryDirectory() as d:
        local = local_store(d)
        lrec, lidx = write(local, payloads)
        it = SegmentationIter(4, (3, 32, 32), lrec, lidx, rand_crop=True, rand_mirror=True,
                              inter_method=0, seed=9)
        for a, b in zip(got, batches(it)):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        it.close()


def test_iter_resumes_mid_epoch(tmp_path):
    from cloudrec.testing.stores import local_store
    store = local_store(tmp_path / "s")
    payloads, _ = make_records()
    rec, idx = write(store, payloads)
    kw = dict(shuffle=True, seed=21, rand_crop=True, rand_mirror=True, inter_method=0)
    it = SegmentationIter(2, (3, 24, 24), rec, idx, **kw)
    batches(it)
    it.reset()                       # epoch 1
    it.next()
    it.next()
    state = it.state_dict()
    rest = batches(it)
    again = SegmentationIter(2, (3, 24, 24), rec, idx, **kw)
    again.load_state_dict(state)
    resumed = batches(again)
    assert len(resumed) == len(rest) == 4
    for a, b in zip(rest, resumed):
        np.testing.assert_array_equal(a[3], b[3])
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    it.close()
    again.close()
