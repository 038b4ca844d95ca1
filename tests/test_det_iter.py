"""ImageDetIter over detection `.rec` files: labels, -1 padding, shapes, errors, stores, im2rec."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from cloudrec.dataset.synthetic import build_shard
from cloudrec.errors import ImageListError, LabelError
from cloudrec.format.irheader import IRHeader, pack
from cloudrec.format.lst import format_lst_line
from cloudrec.image.augmenters import ForceResizeAug
from cloudrec.image.det_augmenters import DetBorrowAug, DetHorizontalFlipAug
from cloudrec.image.det_labels import DetLabelError, check_det_lst, make_det_label
from cloudrec.iterators.image_det import ImageDetIter
from cloudrec.recordio import MXIndexedRecordIO

COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
SIZES = [(60, 80), (64, 64), (50, 90)]
N = 7


def bg(i):
    return (10 + 20 * i, 20, 30)


def sample(i):
    """Record i: a PNG whose background encodes i, i % 3 + 1 filled boxes of class 0..2,
    objects [class, corners, i] (B = 6), header [A=4, 6, 7.5, i] on odd records."""
    h, w = SIZES[i % 3]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg(i)
    rows = []
    for k in range(i % 3 + 1):
        x1, y1 = 4 + k * (w // 3), 5 + (i % 2) * 3
        x2, y2 = x1 + w // 4, y1 + h // 2 + k * 3
        img[y1:y2, x1:x2] = COLOURS[k]
        rows.append([k, x1 / w, y1 / h, x2 / w, y2 / h, i])
    objs = np.array(rows, np.float32)
    label = make_det_label(objs, [7.5, i] if i % 2 else [])
    png = cv2.imencode(".png", img[:, :, ::-1])[1].tobytes()
    return img, objs, label, png


SAMPLES = [sample(i) for i in range(N)]


def payloads(labels=None):
    labels = labels or [s[2] for s in SAMPLES]
    return [pack(IRHeader(0, lab, i, 0), SAMPLES[i % N][3]) for i, lab in enumerate(labels)]


def write_local(tmp_path, labels=None, name="det"):
    """Pack with cloudrec's own recordio API (MXIndexedRecordIO.write_idx)."""
    rec, idx = str(tmp_path / f"{name}.rec"), str(tmp_path / f"{name}.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i, p in enumerate(payloads(labels)):
        w.write_idx(i, p)
    w.close()
    return rec, idx


def expected_label(i, rows):
    out = np.full((rows, 6), -1, np.float32)
    objs = SAMPLES[i][1]
    out[:len(objs)] = objs
    return out


def collect(it):
    return [(b.data[0].copy(), b.label[0].copy(), b.pad) for b in it]


def record_of(img_chw):
    """Which record an image came from: its background colour (top-left region is bg)."""
    r = float(img_chw[0].reshape(-1)[0])
    return int(round((r - 10) / 20))


def test_labels_padding_and_shapes_as_mxnet(tmp_path):
    rec, idx = write_local(tmp_path)
    it = ImageDetIter(3, (3, 40, 40), path_imgrec=rec, path_imgidx=idx, seed=0)
    assert it.label_shape == (3, 6)
    assert tuple(it.provide_label[0][1]) == (3, 3, 6) and it.provide_label[0][0] == "label"
    assert tuple(it.provide_data[0][1]) == (3, 3, 40, 40)
    got = collect(it)
    assert [g[2] for g in got] == [0, 0, 2]
    labels = np.concatenate([g[1] for g in got])
    data = np.concatenate([g[0] for g in got])
    for slot in range(9):
        i = slot % N  # 'pad' fills the last batch from the start
        np.testing.assert_array_equal(labels[slot], expected_label(i, 3))
        want = ForceResizeAug((40, 40), 2)(SAMPLES[i][0]).astype(np.float32).transpose(2, 0, 1)
        np.testing.assert_array_equal(data[slot], want)
    with pytest.raises(StopIteration):
        it.next()
    it.reset()
    assert len(collect(it)) == 3
    # discard / roll_over come from ImageIter
    it = ImageDetIter(3, (3, 40, 40), path_imgrec=rec, path_imgidx=idx,
                      last_batch_handle="discard")
    assert [g[2] for g in collect(it)] == [0, 0]
    it.close()


def test_invalid_rows_dropped_and_empty_samples_skipped(tmp_path):
    labels = [s[2] for s in SAMPLES[:4]]
    # record 1 carries two -1 padding rows after its objects: they disappear
    labels[1] = np.concatenate([labels[1], -np.ones(12, np.float32)])
    # record 2 has no valid object at all: skipped (as MXNet), counted
    labels[2] = np.array([2, 5, 0, 0.5, 0.5, 0.5, 0.9, -1, -1, -1, -1, -1], np.float32)
    rec, idx = write_local(tmp_path, labels)
    it = ImageDetIter(4, (3, 32, 32), path_imgrec=rec, path_imgidx=idx)
    assert it.label_shape == (2, 6)  # record 1's two objects; its padding rows do not count
    (data, lab, pad), = collect(it)
    assert pad == 1
    assert [record_of(d) for d in data] == [0, 1, 3, 0]
    np.testing.assert_array_equal(lab[1], expected_label(1, 2))
    assert it.num_empty == 1 and "key 2" in it.empty[0]


@pytest.mark.parametrize("bad,match", [
    (np.array([2, 6, 0, .1, .1, .5, .5, 9, 1, .1], np.float32), r"disagrees with header width 2"),
    (np.array([2, 5, 0, .1, .1, 1.5, .5], np.float32), r"xmax = 1.5, outside \[0, 1\]"),
    (np.array([2, 5, 0, np.nan, .1, .5, .5], np.float32), r"non-finite value nan"),
    (np.array([2, 5, 0, .1, .1], np.float32), r"at least 7 values"),
    (np.array([1, 5, 0, .1, .1, .5, .5], np.float32), r"A >= 2"),
])
def test_bad_labels_name_the_record(tmp_path, bad, match):
    labels = [s[2] for s in SAMPLES[:6]]
    labels[4] = bad
    rec, idx = write_local(tmp_path, labels)
    # found by the constructor's label scan ...
    with pytest.raises(DetLabelError, match=match) as ei:
        ImageDetIter(2, (3, 32, 32), path_imgrec=rec, path_imgidx=idx)
    assert ei.value.key == 4 and ei.value.url == rec
    assert "det.rec" in str(ei.value) and "record key 4" in str(ei.value)
    # ... and, without the scan, when the batch holding it is made
    it = ImageDetIter(2, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, label_shape=(3, 6))
    it.next()
    it.next()
    with pytest.raises(LabelError, match=match + r".*record key 4"):
        it.next()
    it.close()


def test_on_error_skip_skips_bad_labels_like_mxnet(tmp_path):
    labels = [s[2] for s in SAMPLES[:5]]
    labels[1] = np.array([2, 5, 0, np.nan, .1, .5, .5], np.float32)
    labels[3] = make_det_label(np.array([[0, .1, .1, .5, .5]], np.float32))  # width 5, not 6
    rec, idx = write_local(tmp_path, labels)
    it = ImageDetIter(4, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, on_error="skip")
    assert it.label_shape == (3, 6)
    (data, lab, pad), = collect(it)
    assert pad == 1 and [record_of(d) for d in data] == [0, 2, 4, 0]
    bad = it.bad_labels
    assert len(bad) == 2 and "non-finite" in bad[0] and "record key 1" in bad[0]
    assert "object width 5" in bad[1] and "record key 3" in bad[1]
    # with a given label_shape (no scan) the width is checked per sample too
    it = ImageDetIter(4, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, on_error="skip",
                      label_shape=(3, 6))
    (data, lab, pad), = collect(it)
    assert [record_of(d) for d in data] == [0, 2, 4, 0]
    it = ImageDetIter(4, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, label_shape=(3, 6))
    with pytest.raises(DetLabelError, match="record key 1"):
        it.next()


def test_object_width_must_agree_across_records(tmp_path):
    labels = [s[2] for s in SAMPLES[:3]]
    labels[2] = make_det_label(np.array([[0, .1, .1, .5, .5]], np.float32))
    rec, idx = write_local(tmp_path, labels)
    with pytest.raises(DetLabelError, match="object width 5 differs from the width 6 of record "
                                            "key 0.*record key 2"):
        ImageDetIter(2, (3, 32, 32), path_imgrec=rec, path_imgidx=idx)


def test_augmented_boxes_frame_pixels_in_batches_and_seed_repeats(tmp_path):
    rec, idx = write_local(tmp_path)

    def make(seed):
        return ImageDetIter(4, (3, 96, 96), path_imgrec=rec, path_imgidx=idx, shuffle=True,
                            rand_crop=0.8, rand_pad=0.5, rand_mirror=True, inter_method=0,
                            area_range=(0.3, 2.0), seed=seed, num_threads=3)
    it = make(11)
    epochs = []
    for _ in range(3):
        got = collect(it)
        epochs.append(got)
        seen = []
        for data, lab, pad in got:
            for img, rows in zip(data[:len(data) - pad], lab[:len(lab) - pad]):
                img = img.transpose(1, 2, 0).astype(np.uint8)
                rows = rows[rows[:, 0] >= 0]
                assert len(rows) >= 1
                rec_id = int(rows[0, 5])
                assert np.all(rows[:, 5] == rec_id)            # labels stay with their image
                seen.append(rec_id)
                for row in rows:
                    ys, xs = np.nonzero(np.all(img == COLOURS[int(row[0])], axis=2))
                    assert ys.size, "a labelled object has no pixels"
                    got_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    want = np.array([row[1] * 96, row[2] * 96, row[3] * 96, row[4] * 96])
                    assert np.abs(got_box - want).max() <= 2.0, (rec_id, got_box, want)
        assert sorted(seen) == list(range(N))
        it.reset()
    again = make(11)
    for e in epochs[:2]:
        for (d1, l1, _), (d2, l2, _) in zip(e, collect(again)):
            np.testing.assert_array_equal(d1, d2)
            np.testing.assert_array_equal(l1, l2)
        again.reset()
    other = collect(make(12))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(epochs[0], other))


def test_reshape_check_and_sync_label_shape(tmp_path):
    rec, idx = write_local(tmp_path)
    small_labels = [make_det_label(s[1][:1]) for s in SAMPLES]  # one object each
    srec, sidx = write_local(tmp_path, small_labels, "small")
    big = ImageDetIter(2, (3, 32, 32), path_imgrec=rec, path_imgidx=idx)
    small = ImageDetIter(2, (3, 32, 32), path_imgrec=srec, path_imgidx=sidx)
    assert small.label_shape == (1, 6)
    with pytest.raises(ValueError, match="reduce label count from 3 to 2"):
        big.reshape(label_shape=(2, 6))
    with pytest.raises(ValueError, match="object width inconsistent"):
        big.reshape(label_shape=(5, 7))
    with pytest.raises(ValueError, match="length 2"):
        big.check_label_shape((5,))
    assert big.sync_label_shape(small) is small
    assert small.label_shape == big.label_shape == (3, 6)
    b = small.next()
    assert b.label[0].shape == (2, 3, 6)
    np.testing.assert_array_equal(b.label[0][0, 1:], -1)
    np.testing.assert_array_equal(b.label[0][0, 0], SAMPLES[0][1][0])
    big.reshape(data_shape=(3, 20, 24), label_shape=(5, 6))
    assert tuple(big.provide_data[0][1]) == (2, 3, 20, 24)
    b = big.next()
    assert b.data[0].shape == (2, 3, 20, 24) and b.label[0].shape == (2, 5, 6)
    np.testing.assert_array_equal(b.label[0][1, 2:], -1)
    with pytest.raises(ValueError, match="3 channels"):
        big.reshape(data_shape=(1, 20, 20))
    # a fixed label_shape too small for the data: a clear error, not a silent cut
    it = ImageDetIter(3, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, label_shape=(1, 6))
    with pytest.raises(LabelError, match="has 2 objects, label_shape"):
        it.next()


def test_draw_next_returns_images_with_boxes(tmp_path):
    rec, idx = write_local(tmp_path)
    it = ImageDetIter(1, (3, 60, 80), path_imgrec=rec, path_imgidx=idx,
                      aug_list=[DetBorrowAug(ForceResizeAug((80, 60), 0))])
    images = list(it.draw_next(color=(255, 0, 10), thickness=1))
    assert len(images) == N
    img = images[0]
    assert img.dtype == np.uint8 and img.shape == (60, 80, 3)
    # record 0 has one box: x 4..24, y 5..35 (end exclusive) -> drawn at int(corner * size)
    x1, y1, x2, y2 = 4, 5, 24, 35
    magenta_bgr = (10, 0, 255)
    assert tuple(img[y1, x1]) == magenta_bgr and tuple(img[y2, x2]) == magenta_bgr
    assert tuple(img[y1, 14]) == magenta_bgr
    assert tuple(img[20, 14]) == (0, 0, 250)        # the box interior, BGR of (250, 0, 0)
    assert tuple(img[55, 70]) == bg(0)[::-1]         # the background, BGR
    # augmented and de-normalised: the flip moves the drawn box with the pixels
    it = ImageDetIter(1, (3, 60, 80), path_imgrec=rec, path_imgidx=idx, mean=True, std=True,
                      aug_list=[DetHorizontalFlipAug(1.0),
                                *ImageDetIter(1, (3, 60, 80), path_imgrec=rec,
                                              path_imgidx=idx, inter_method=0, mean=True,
                                              std=True).auglist])
    img = next(it.draw_next(color=(255, 0, 10), thickness=1, mean=True, std=True))
    assert tuple(img[y1, 80 - x2]) == magenta_bgr
    assert np.abs(img[20, 80 - 14].astype(int) - (0, 0, 250)).max() <= 1


def test_imglist_and_lst_sources(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    lines = []
    for i, (_img, _o, label, png) in enumerate(SAMPLES):
        (root / f"{i}.png").write_bytes(png)
        lines.append(format_lst_line(i, label.tolist(), f"{i}.png"))
    lst = tmp_path / "det.lst"
    lst.write_text("".join(lines))
    assert [k for k, _ in check_det_lst(lst.read_text(), str(lst))] == list(range(N))
    it = ImageDetIter(4, (3, 32, 32), path_imglist=str(lst), path_root=str(root))
    assert it.label_shape == (3, 6)
    labels = np.concatenate([g[1] for g in collect(it)])
    for slot in range(7):
        np.testing.assert_allclose(labels[slot], expected_label(slot, 3), atol=1e-6)
    imglist = [[SAMPLES[i][2].tolist(), str(root / f"{i}.png")] for i in range(3)]
    it = ImageDetIter(3, (3, 32, 32), imglist=imglist)
    assert it.label_shape == (3, 6)
    # a wrong width in the .lst: the line is named
    bad = lines[:]
    bad[3] = format_lst_line(3, SAMPLES[3][2].tolist() + [0.5], "3.png")
    lst.write_text("".join(bad))
    with pytest.raises(DetLabelError, match=r"det\.lst, record key 3, line 4"):
        check_det_lst(lst.read_text(), str(lst))
    with pytest.raises(DetLabelError, match=r"det\.lst.*record key 3"):
        ImageDetIter(4, (3, 32, 32), path_imglist=str(lst), path_root=str(root))


def test_rec_images_with_lst_labels(tmp_path):
    """path_imgrec + path_imglist: images from the records, detection labels from the .lst
    (looked up by record key), as MXNet's ImageIter."""
    rec, idx = str(tmp_path / "r.rec"), str(tmp_path / "r.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i, smp in enumerate(SAMPLES):
        w.write_idx(i, pack(IRHeader(0, 0.0, i, 0), smp[3]))
    w.close()
    lst = tmp_path / "r.lst"
    lst.write_text("".join(format_lst_line(i, smp[2].tolist(), f"{i}.png")
                           for i, smp in enumerate(SAMPLES)))
    it = ImageDetIter(7, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, path_imglist=str(lst))
    assert it.label_shape == (3, 6)
    b = it.next()
    for i in range(N):
        np.testing.assert_allclose(b.label[0][i], expected_label(i, 3), atol=1e-6)
        assert record_of(b.data[0][i]) == i


def test_shuffle_and_partitions_cover_each_record_once(tmp_path):
    rec, idx = write_local(tmp_path, [s[2] for s in SAMPLES] * 2)  # 14 records
    seen = []
    for part in range(2):
        it = ImageDetIter(3, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, shuffle=True,
                          num_parts=2, part_index=part, seed=4)
        ids = []
        for data, lab, pad in collect(it):
            for img, rows in zip(data[:len(data) - pad], lab[:len(lab) - pad]):
                assert record_of(img) == int(rows[0, 5])  # image and label stay together
                ids.append(record_of(img))
        assert len(ids) == 7
        assert sorted(ids) == sorted(int(k) % N for k in it.seq)
        seen += [int(k) for k in it.seq]
        it.close()
    assert sorted(seen) == list(range(14))


def test_on_store(store, tmp_path):
    """Local disk, S3 and HDFS: the same labels and pixels, read through the reader layer."""
    rec_bytes, idx_bytes = build_shard(payloads(), list(range(N)))
    rec = store.put("det/train.rec", rec_bytes)
    idx = store.put("det/train.idx", idx_bytes)
    it = ImageDetIter(3, (3, 40, 40), path_imgrec=rec, path_imgidx=idx,
                      storage_options=store.storage_options, rand_mirror=True, seed=2)
    assert it.label_shape == (3, 6)
    got = collect(it)
    assert [g[2] for g in got] == [0, 0, 2]
    labels = np.concatenate([g[1] for g in got])
    for slot in range(9):
        want = expected_label(slot % N, 3)
        flipped = want.copy()
        valid = want[:, 0] >= 0
        flipped[valid, 1], flipped[valid, 3] = 1 - want[valid, 3], 1 - want[valid, 1]
        assert np.allclose(labels[slot], want) or np.allclose(labels[slot], flipped, atol=1e-6)
    it.close()
    # through the local shard cache, and sequentially without the .idx: the same batches
    cached = ImageDetIter(3, (3, 40, 40), path_imgrec=rec, path_imgidx=idx,
                          storage_options=store.storage_options, rand_mirror=True, seed=2,
                          fetch_options={"cache": "shards", "cache_dir": str(tmp_path / "c")})
    seq = ImageDetIter(3, (3, 40, 40), path_imgrec=rec, storage_options=store.storage_options,
                       rand_mirror=True, seed=2)
    for other in (cached, seq):
        assert other.label_shape == (3, 6)
        for (d1, l1, p1), (d2, l2, p2) in zip(got, collect(other)):
            np.testing.assert_array_equal(d1, d2)
            np.testing.assert_array_equal(l1, l2)
            assert p1 == p2
        other.close()
    if store.name != "local":  # local shards are read in place, never cached
        assert any(p.is_file() for p in (tmp_path / "c").rglob("*"))


def _run_im2rec(argv):
    from cloudrec.tools.im2rec import main
    return main(argv)


def test_im2rec_pack_label_uniform_width_detection_list(tmp_path):
    """``cloudrec im2rec --pack-label`` packs a detection .lst whose lines have equal widths
    (objects padded with -1 rows); ImageDetIter reads it back."""
    root = tmp_path / "img"
    root.mkdir()
    lines = []
    for i, (_img, objs, _label, png) in enumerate(SAMPLES):
        (root / f"{i}.png").write_bytes(png)
        padded = np.full((3, 6), -1, np.float32)
        padded[:len(objs)] = objs
        lines.append(format_lst_line(i, make_det_label(padded).tolist(), f"{i}.png"))
    (tmp_path / "det.lst").write_text("".join(lines))
    rc = _run_im2rec([str(tmp_path / "det"), str(root), "--pack-label", "--pass-through",
                      "--no-progress"])
    assert rc == 0
    r = MXIndexedRecordIO(str(tmp_path / "det.idx"), str(tmp_path / "det.rec"), "r")
    from cloudrec.format.irheader import unpack
    header, img = unpack(r.read_idx(2))
    assert header.flag == 2 + 18 and img == SAMPLES[2][3]
    r.close()
    it = ImageDetIter(4, (3, 32, 32), path_imgrec=str(tmp_path / "det.rec"),
                      path_imgidx=str(tmp_path / "det.idx"))
    assert it.label_shape == (3, 6)
    labels = np.concatenate([g[1] for g in collect(it)])
    for slot in range(7):
        np.testing.assert_allclose(labels[slot], expected_label(slot, 3), atol=1e-6)


def test_im2rec_pack_label_variable_width_detection_list(tmp_path):
    """Variable-width detection lines pack as they are (as MXNet's im2rec.py) and read back."""
    root = tmp_path / "img"
    root.mkdir()
    lines = []
    for i, (_img, _objs, label, png) in enumerate(SAMPLES):
        (root / f"{i}.png").write_bytes(png)
        lines.append(format_lst_line(i, label.tolist(), f"{i}.png"))
    assert len({len(ln.split("\t")) for ln in lines}) > 1  # the widths really differ
    (tmp_path / "det.lst").write_text("".join(lines))
    rc = _run_im2rec([str(tmp_path / "det"), str(root), "--pack-label", "--pass-through",
                      "--no-progress"])
    assert rc == 0
    it = ImageDetIter(4, (3, 32, 32), path_imgrec=str(tmp_path / "det.rec"),
                      path_imgidx=str(tmp_path / "det.idx"))
    labels = np.concatenate([g[1] for g in collect(it)])
    for slot in range(7):
        np.testing.assert_allclose(labels[slot], expected_label(slot, 3), atol=1e-6)


def test_im2rec_pack_label_names_the_bad_detection_line(tmp_path, capsys):
    root = tmp_path / "img"
    root.mkdir()
    lines = []
    for i, (_img, _objs, label, png) in enumerate(SAMPLES):
        (root / f"{i}.png").write_bytes(png)
        lab = label.tolist()
        if i == 2:
            lab[int(lab[0]) + 3] = 1.7  # the first object's xmax, outside 0..1
        lines.append(format_lst_line(i, lab, f"{i}.png"))
    (tmp_path / "det.lst").write_text("".join(lines))
    rc = _run_im2rec([str(tmp_path / "det"), str(root), "--pack-label", "--pass-through",
                      "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "outside [0, 1]" in err and "det.lst" in err and "line 3" in err
    assert not (tmp_path / "det.rec").exists()


def test_config_yaml_builds_the_iterator_and_unknown_args_are_named(tmp_path):
    from cloudrec.config import load_config
    from cloudrec.errors import ConfigError
    rec, idx = write_local(tmp_path)
    os.environ["CLOUDREC_DATA"], os.environ["CLOUDREC_DATA_IDX"] = rec, idx
    try:
        cfg = load_config("detection")   # the packaged cloudrec/configs/detection.yaml
    finally:
        del os.environ["CLOUDREC_DATA"], os.environ["CLOUDREC_DATA_IDX"]
    assert cfg.iterator == "ImageDetIter"
    kw = cfg.iterator_kwargs(batch_size=4, data_shape=(3, 64, 64), seed=1)
    it = ImageDetIter(**kw)
    b = it.next()
    assert b.data[0].shape == (4, 3, 64, 64) and b.label[0].shape == (4, 3, 6)
    it.close()
    with pytest.raises(ConfigError, match=r"unknown keyword argument\(s\) \['rand_mirorr'\]"):
        ImageDetIter(2, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, rand_mirorr=True)
