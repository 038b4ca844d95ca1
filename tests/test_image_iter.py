"""ImageIter: MXNet 1.9.1's batches (golden fixtures), partitions, epochs, threads, errors, URLs."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudrec.errors import ImageListError, ImageTooLargeError, LabelError
from cloudrec.image import CastAug, CreateAugmenter, ImageIter
from cloudrec.iterators.sample_stream import BrokenImageError
from cloudrec.recordio import MXIndexedRecordIO, pack

FIX = Path(__file__).parent / "fixtures" / "mxnet"
ITERS = FIX / "reads" / "iters"
CONFIGS = sorted(p.stem for p in ITERS.glob("ii_*.json"))
STD = np.array([58.395, 57.12, 57.375], np.float32)


def _load(name):
    return json.loads((ITERS / f"{name}.json").read_text())


def _make(cfg, **extra):
    kw = dict(cfg["kwargs"])
    for k in ("path_imgrec", "path_imgidx", "path_imglist", "path_root"):
        if k in kw:
            kw[k] = str(FIX / kw[k])
    kw["data_shape"] = tuple(kw["data_shape"])
    kw.update(extra)
    return ImageIter(aug_list=CreateAugmenter((3, 32, 32), **cfg["create_augmenter"]), **kw)


def _run(it, epochs):
    out, data, labels = [], [], []
    for e in range(epochs):
        if e:
            it.reset()
        batches = []
        for b in it:
            assert b.data[0].dtype == np.float32 and b.index is None
            batches.append({"pad": b.pad, "label": b.label[0].tolist()})
            if e == 0:
                data.append(b.data[0])
                labels.append(b.label[0])
        out.append(batches)
    return out, data, labels


@pytest.mark.parametrize("name", [c for c in CONFIGS if c != "ii_truncated_jpeg"])
def test_matches_mxnet_fixture(name):
    cfg = _load(name)
    if cfg["outcome"] == "exception":
        want = cfg["exception"]
        exc_type = {"ValueError": ValueError, "RuntimeError": RuntimeError}[want["type"]]
        with pytest.raises(exc_type) as e:
            _run(_make(cfg), cfg["epochs"])
        if name == "ii_1ch_error":
            assert str(e.value) == want["message"]
        elif want["type"] == "RuntimeError":  # broken image: names the record (index 1)
            assert isinstance(e.value, BrokenImageError)
            assert "Broken image index: 1" in str(e.value) and "offset" in str(e.value)
        else:
            assert isinstance(e.value, LabelError) and "label_width is 1" in str(e.value)
        return
    it = _make(cfg, num_threads=3)
    assert [tuple(d) for d in it.provide_data] == [(n, tuple(s)) for n, s in cfg["provide_data"]]
    assert [tuple(d) for d in it.provide_label] == [(n, tuple(s)) for n, s in cfg["provide_label"]]
    got, data, labels = _run(it, cfg["epochs"])
    want = [[{"pad": b["pad"], "label": b["label"]} for b in ep] for ep in cfg["epochs_out"]]
    assert got == want
    for ep in cfg["epochs_out"]:
        for b in ep:
            assert b["data_shape"] == list(it.provide_data[0][1]) and b["data_dtype"] == "float32"
    if cfg.get("data_file"):
        ref = np.load(ITERS / cfg["data_file"])
        ref_label = np.load(ITERS / cfg["label_file"])
        got_data = np.concatenate(data)
        assert np.array_equal(np.concatenate(labels), ref_label)
        if cfg["create_augmenter"].get("inter_method") == 1:
            assert np.array_equal(got_data, ref)  # bilinear: bit-exact
        else:
            # bicubic: libmxnet's OpenCV 3.4.2 and cv2 4.x/5.x differ by one pixel level on
            # a few % of the elements; after (x - mean) / std that is at most 1 / min(std)
            diff = np.abs(got_data - ref)
            assert diff.max() <= 1.0 / STD.min() + 1e-5
            assert (diff > 0).mean() < 0.05


def test_truncated_jpeg_is_an_error_or_a_counted_skip():
    cfg = _load("ii_truncated_jpeg")
    with pytest.raises(BrokenImageError, match="Broken image index: 1"):
        _run(_make(cfg), 1)
    # MXNet's OpenCV 3.4.2 returned half an image; by default we refuse it.  With on_error='skip' the
    # other three records match MXNet's pixels exactly, and the skip is counted.
    it = _make(cfg, on_error="skip")
    batches = list(it)
    assert len(batches) == 1 and batches[0].pad == 1
    assert batches[0].label[0].tolist() == [0.0, 2.0, 3.0, 0.0]
    ref = np.load(ITERS / cfg["data_file"])
    assert np.array_equal(batches[0].data[0][:3], ref[[0, 2, 3]])
    assert it.num_skipped == 1 and "index: 1" in it.skipped[0]
    # truncated='mxnet' rebuilds libmxnet's half-decoded image: the whole batch is bit-exact
    it = _make(cfg, truncated="mxnet")
    got = np.concatenate([b.data[0] for b in it])
    assert np.array_equal(got, ref)


def test_gray_and_png_inputs_as_mxnet():
    # passthrough holds two 1-channel JPEGs and a PNG: all decode to 3 channels; the
    # bilinear fixture (bit-exact above) includes them.  Check which ones they are.
    r = MXIndexedRecordIO(str(FIX / "pack/passthrough/all.idx"), str(FIX / "pack/passthrough/all.rec"), "r")
    kinds = set()
    for k in r.keys:
        payload = r.read_idx(k)[24:]
        img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        kinds.add((payload[:4] == b"\x89PNG", img.ndim))
    assert (True, 3) in kinds and (False, 2) in kinds
    it = ImageIter(4, (3, 32, 32), path_imgrec=str(FIX / "pack/gray/all.rec"),
                   path_imgidx=str(FIX / "pack/gray/all.idx"), inter_method=1)
    b = next(it)
    assert np.array_equal(b.data[0][:, 0], b.data[0][:, 1])  # gray records: equal channels


def _ids_labels(it, epochs=1):
    eps = []
    for e in range(epochs):
        if e:
            it.reset()
        seen = []
        for b in it:
            n = it.batch_size - b.pad
            seen += b.label[0][:n].astype(int).tolist()
        eps.append(seen)
    return eps


@pytest.mark.parametrize("num_parts", [1, 2, 3, 5, 7])
def test_shuffle_partitions_exactly_once(num_parts):
    rec, idx = str(FIX / "pack/uniq/uniq.rec"), str(FIX / "pack/uniq/uniq.idx")
    keys = [int(l.split("\t")[0]) for l in (FIX / "pack/uniq/uniq.idx").read_text().splitlines()]
    c = len(keys) // num_parts
    union = []
    for p in range(num_parts):
        it = ImageIter(3, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, shuffle=True,
                       num_parts=num_parts, part_index=p, seed=11, resize=36)
        part = keys[p * c:(p + 1) * c]
        assert sorted(it.seq) == sorted(part)
        eps = _ids_labels(it, epochs=3)
        for ep in eps:  # uniq: label == key, so labels name the records
            assert sorted(ep) == sorted(part)
        if len(part) > 3:
            assert len({tuple(ep) for ep in eps}) > 1  # a new order each epoch
        union += part
    assert len(union) == len(set(union)) == (len(keys) // num_parts) * num_parts
    # same seed, same orders
    a = ImageIter(3, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=4)
    b = ImageIter(3, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=4)
    assert _ids_labels(a, 2) == _ids_labels(b, 2)


def test_random_augmentation_is_independent_of_threads():
    rec, idx = str(FIX / "pack/passthrough/all.rec"), str(FIX / "pack/passthrough/all.idx")
    aug = dict(resize=40, rand_crop=True, rand_mirror=True, rand_resize=True, brightness=0.3,
               contrast=0.3, saturation=0.3, hue=0.1, pca_noise=0.1, rand_gray=0.2, mean=True,
               std=True)
    runs = []
    for threads in (1, 8):  # also different lookahead depths (10 vs 16 samples)
        it = ImageIter(5, (3, 24, 24), path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=3,
                       num_threads=threads, **aug)
        batches = []
        for epoch in range(3):  # 24 images: the last batch of each epoch is padded
            if epoch:
                it.reset()
            batches += list(it)
        runs.append([b.data[0] for b in batches])
    assert len(runs[0]) == 15
    assert all(np.array_equal(x, y) for x, y in zip(*runs))
    it = ImageIter(5, (3, 24, 24), path_imgrec=rec, path_imgidx=idx, shuffle=True, seed=99, **aug)
    assert not np.array_equal(next(it).data[0], runs[0][0])


def test_roll_over_counts_like_mxnet_unittest():
    # 16 images, batch 3 (mx tests/python/unittest/test_image.py): epochs of 5, 5, 6 batches
    imglist = [[float(i), f"img{i}.png"] for i in range(16)]
    it = ImageIter(3, (3, 8, 8), imglist=imglist, path_root="unused",
                   last_batch_handle="roll_over", aug_list=[])
    it.read_image = lambda f: cv2.imencode(".png", np.full((8, 8, 3), int(f[3:-4]), np.uint8))[1].tobytes()
    counts, firsts = [], []
    for e in range(3):
        if e:
            it.reset()
        bs = list(it)
        counts.append(len(bs))
        firsts.append((bs[0].pad, bs[0].label[0].tolist()))
    assert counts == [5, 5, 6]
    assert firsts[1] == (2, [15.0, 0.0, 1.0]) and firsts[2] == (1, [14.0, 15.0, 0.0])
    it.hard_reset()
    assert next(it).label[0].tolist() == [0.0, 1.0, 2.0]


def test_imglist_python_list_multilabel_and_keys(tmp_path):
    imgs = []
    for i in range(5):
        p = tmp_path / f"{i}.jpg"
        cv2.imwrite(str(p), np.full((40, 40, 3), 20 * i, np.uint8))
        imgs.append([i, i + 0.5, 2.0 * i, p.name])
    it = ImageIter(2, (3, 32, 32), label_width=3, imglist=imgs, path_root=str(tmp_path),
                   dtype="float64")
    assert it.seq == ["1", "2", "3", "4", "5"]
    assert it.provide_label[0] == ("softmax_label", (2, 3))
    bs = list(it)
    assert bs[0].label[0].dtype == np.float32  # MXNet 1.9.1: batch labels are float32 whatever dtype
    assert bs[0].label[0].tolist() == [[0, 0.5, 0], [1, 1.5, 2]]
    assert bs[2].pad == 1 and bs[2].label[0].tolist() == [[4, 4.5, 8], [0, 0.5, 0]]
    assert abs(bs[1].data[0][0].mean() - 40) < 2
    with pytest.raises(LabelError, match="3 label"):
        list(ImageIter(2, (3, 32, 32), imglist=imgs, path_root=str(tmp_path)))


def test_constructor_checks():
    rec = str(FIX / "pack/uniq/uniq.rec")
    with pytest.raises(AssertionError):
        ImageIter(2, (3, 8, 8))
    with pytest.raises(AssertionError):
        ImageIter(2, (3, 8, 8), path_imgrec=rec, dtype="uint8")
    with pytest.raises(AssertionError):  # shuffle needs an .idx
        ImageIter(2, (3, 8, 8), path_imgrec=rec, shuffle=True)
    for shape in ((1, 8, 8), (4, 8, 8)):
        with pytest.raises(ValueError, match="3 channels"):
            ImageIter(2, shape, path_imgrec=rec)
    with pytest.raises(ValueError, match="length 3"):
        ImageIter(2, (8, 8), path_imgrec=rec)


def test_bad_lst_line_names_the_line(tmp_path):
    lst = tmp_path / "bad.lst"
    lst.write_text("0\t1.000000\ta.jpg\nnot-a-number\t2.0\tb.jpg\n")
    with pytest.raises(ImageListError) as e:
        ImageIter(2, (3, 8, 8), path_imglist=str(lst), path_root=str(tmp_path))
    assert "bad.lst" in str(e.value) and "line 2" in str(e.value)


def _write_rec(tmp_path, payloads):
    rec, idx = str(tmp_path / "t.rec"), str(tmp_path / "t.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    for i, p in enumerate(payloads):
        w.write_idx(i, pack((0, float(i), i, 0), p))
    w.close()
    return rec, idx


def test_bomb_and_small_image_and_skip(tmp_path):
    ok = cv2.imencode(".png", np.full((40, 40, 3), 7, np.uint8))[1].tobytes()
    bomb = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    bomb[16:24] = (100000).to_bytes(4, "big") * 2  # IHDR claims 100000 x 100000
    rec, idx = _write_rec(tmp_path, [ok, bytes(bomb), ok, b"garbage!", ok])
    with pytest.raises(ImageTooLargeError) as e:
        list(ImageIter(5, (3, 32, 32), path_imgrec=rec, path_imgidx=idx))
    assert "index: 1" in str(e.value) and "t.rec" in str(e.value)
    it = ImageIter(5, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, on_error="skip")
    bs = list(it)
    assert [b.label[0].tolist() for b in bs] == [[0.0, 2.0, 4.0, 0.0, 2.0]] and bs[0].pad == 2
    assert it.num_skipped == 3  # records 1 and 3, and record 1 again while padding
    assert ["index: 1" in m for m in it.skipped] == [True, False, True]
    # an augmenter list that does not crop leaves a 40x40 image: a clear error, no crash
    with pytest.raises(ValueError, match=r"index: 0.*\(3, 40, 40\)"):
        next(ImageIter(2, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, aug_list=[CastAug()]))


def test_mxnet_style_subclass_hooks(tmp_path):
    rec, idx = str(FIX / "pack/uniq/uniq.rec"), str(FIX / "pack/uniq/uniq.idx")

    class Sub(ImageIter):
        def next_sample(self):  # MXNet-style override, using self.imgrec.read_idx
            if self.cur >= self.num_image:
                raise StopIteration
            key = self.seq[self.cur]
            self.cur += 1
            s = self.imgrec.read_idx(key)
            return float(key) * 10, s[24:]

        def postprocess_data(self, datum):
            return np.transpose(datum, (2, 0, 1)) * 0 + 1

    it = Sub(4, (3, 32, 32), path_imgrec=rec, path_imgidx=idx, resize=36,
             last_batch_handle="discard")
    b = next(it)
    assert b.label[0].tolist() == [100.0, 90.0, 210.0, 200.0]
    assert (b.data[0] == 1).all()


def _upload_tree(fs, local_root, remote_root):
    for p in Path(local_root).rglob("*"):
        if p.is_file():
            fs.pipe_file(remote_root + "/" + str(p.relative_to(local_root)), p.read_bytes())


@pytest.mark.s3
def test_rec_and_lst_on_s3(s3_server, tmp_path):
    import fsspec
    bucket = s3_server.new_bucket()
    so = s3_server.storage_options
    fs = fsspec.filesystem("s3", **so)
    base = bucket.replace("s3://", "")
    _upload_tree(fs, FIX / "pack/passthrough", base + "/pack")
    _upload_tree(fs, FIX / "images", base + "/images")
    cfg = _load("ii_center_norm_bilinear")
    ref = np.load(ITERS / cfg["data_file"])
    augs = CreateAugmenter((3, 32, 32), **cfg["create_augmenter"])
    it = ImageIter(5, (3, 32, 32), path_imgrec=f"{bucket}/pack/all.rec",
                   path_imgidx=f"{bucket}/pack/all.idx", aug_list=augs, storage_options=so)
    assert np.array_equal(np.concatenate([b.data[0] for b in it]), ref)
    # raw image files named by a .lst, path_root on S3: the same pixels (spec: same data)
    it = ImageIter(5, (3, 32, 32), path_imglist=f"{bucket}/pack/all.lst",
                   path_root=f"{bucket}/images", aug_list=augs, storage_options=so,
                   num_threads=4)
    assert np.array_equal(np.concatenate([b.data[0] for b in it]), ref)
    # shuffle + parts on S3: each record of the partition once per epoch, right label
    uniq = FIX / "pack/uniq"
    for f in ("uniq.rec", "uniq.idx"):
        fs.pipe_file(f"{base}/uniq/{f}", (uniq / f).read_bytes())
    seen = []
    for p in range(2):
        it = ImageIter(5, (3, 32, 32), path_imgrec=f"{bucket}/uniq/uniq.rec",
                       path_imgidx=f"{bucket}/uniq/uniq.idx", shuffle=True, num_parts=2,
                       part_index=p, seed=1, storage_options=so, resize=36)
        for ep in _ids_labels(it, 2):
            assert sorted(ep) == sorted(it.seq)
        seen += it.seq
    assert sorted(seen) == list(range(24))
    # .lst + path_root on S3 with shuffle and parts: uniq.lst labels are the record indices
    fs.pipe_file(f"{base}/uniq/uniq.lst", (uniq / "uniq.lst").read_bytes())
    seen = []
    for p in range(3):
        it = ImageIter(3, (3, 32, 32), path_imglist=f"{bucket}/uniq/uniq.lst",
                       path_root=f"{bucket}/images", shuffle=True, num_parts=3, part_index=p,
                       seed=2, storage_options=so, resize=36)
        part = sorted(int(k) for k in it.seq)
        assert len(part) == 8
        for ep in _ids_labels(it, 2):
            assert sorted(ep) == part
        seen += part
    assert sorted(seen) == list(range(24))


def test_rec_and_files_on_every_store(store):
    """The same batches from a local folder, S3 and HDFS (rec + idx, and .lst + path_root)."""
    for f in ("all.rec", "all.idx", "all.lst"):
        store.put(f"pack/{f}", (FIX / "pack/passthrough" / f).read_bytes())
    for p in (FIX / "images").rglob("*.jpg"):
        store.put(f"images/{p.relative_to(FIX / 'images')}", p.read_bytes())
    for p in (FIX / "images").rglob("*.png"):
        store.put(f"images/{p.relative_to(FIX / 'images')}", p.read_bytes())
    cfg = _load("ii_center_norm_bilinear")
    ref = np.load(ITERS / cfg["data_file"])
    augs = CreateAugmenter((3, 32, 32), **cfg["create_augmenter"])
    so = store.storage_options
    it = ImageIter(5, (3, 32, 32), path_imgrec=store.url("pack/all.rec"),
                   path_imgidx=store.url("pack/all.idx"), aug_list=augs, storage_options=so)
    assert np.array_equal(np.concatenate([b.data[0] for b in it]), ref)
    it = ImageIter(5, (3, 32, 32), path_imglist=store.url("pack/all.lst"),
                   path_root=store.url("images"), aug_list=augs, storage_options=so)
    assert np.array_equal(np.concatenate([b.data[0] for b in it]), ref)
    it = ImageIter(5, (3, 32, 32), path_imgrec=store.url("pack/all.rec"), aug_list=augs,
                   storage_options=so)  # no .idx: sequential read
    assert np.array_equal(np.concatenate([b.data[0] for b in it]), ref)


def test_no_thread_leak_with_or_without_close():
    import gc
    import threading
    import time
    base = threading.active_count()
    for i in range(12):
        it = ImageIter(4, (3, 32, 32), path_imgrec=str(FIX / "pack/uniq/uniq.rec"),
                       path_imgidx=str(FIX / "pack/uniq/uniq.idx"), resize=36, shuffle=True)
        next(it)
        if i % 2:
            it.close()
        del it
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > base and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= base
