"""mx.gluon.data through the shim: datasets, samplers, DataLoader, vision datasets/transforms.

Checked against what MXNet 1.9.1 read from the same files (fixtures/mxnet) where it exists,
against MXNet's own Gluon tests (test_recordimage_dataset[_with_data_loader_multiworker]),
and on S3 (moto on 127.0.0.1) for the fsspec URLs.
"""
import hashlib
import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudrec import mxnet_compat as mx
from cloudrec.errors import ImageDecodeError

gdata = mx.gluon.data
vision = mx.gluon.data.vision
transforms = mx.gluon.data.vision.transforms

FIX = Path(__file__).parent / "fixtures" / "mxnet"
ALL = str(FIX / "pack" / "passthrough" / "all.rec")
UNIQ = str(FIX / "pack" / "uniq" / "uniq.rec")
IMAGES = FIX / "images"


def _records_json(name):
    return json.loads((FIX / "reads" / "records" / f"{name}.json").read_text())


def _make_rec(tmp_path, n=10):
    """MXNet's test_recordimage_dataset rec: pack((0, i, i, 0), jpeg of a random image)."""
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "test.idx"), str(tmp_path / "test.rec"),
                                        "w")
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)
        ok, jpg = cv2.imencode(".jpg", img)
        rec.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, i, i, 0), jpg.tobytes()))
    rec.close()
    return str(tmp_path / "test.rec")


# ------------------------------------------------------------------------------ import paths
def test_import_paths():
    from cloudrec.mxnet_compat.gluon.data.vision import transforms as t  # noqa: F401
    from cloudrec.mxnet_compat.gluon.data import DataLoader  # noqa: F401
    assert t is transforms and DataLoader is gdata.DataLoader
    assert mx.gluon.data.vision.ImageRecordDataset is vision.ImageRecordDataset


# ------------------------------------------------------------------------------ record datasets
def test_recordimage_dataset_as_mxnets_test(tmp_path):
    ds = vision.ImageRecordDataset(_make_rec(tmp_path))
    assert len(ds) == 10
    for i in range(len(ds)):
        img, label = ds[i]
        assert isinstance(img, mx.nd.NDArray) and img.shape == (20 + i, 24, 3)
        assert img.dtype == np.uint8 and label == i


def test_recordimage_dataset_with_data_loader_multiworker(tmp_path):
    ds = vision.ImageRecordDataset(_make_rec(tmp_path)).transform_first(
        transforms.Compose([transforms.Resize((24, 20)), transforms.ToTensor()]))
    loader = gdata.DataLoader(ds, 1, num_workers=2)
    labels = []
    for img, label in loader:
        assert img.shape == (1, 3, 20, 24) and img.dtype == np.float32
        labels.append(float(label.asnumpy()[0]))
    assert labels == list(range(10))
    loader.close()


def test_record_file_dataset_bytes_equal_mxnet_reads():
    ref = _records_json("pack__uniq__uniq")
    ds = gdata.RecordFileDataset(UNIQ)
    assert len(ds) == ref["num_records"] == 24
    by_key = {k: off for k, off in ref["idx"]}
    sha_by_len = {r["sha256"] for r in ref["records"]}
    for i in range(len(ds)):
        assert hashlib.sha256(ds[i]).hexdigest() in sha_by_len
    assert list(by_key)[: len(ds)] == ds._record.keys  # .idx line order, as MXNet


def test_image_record_dataset_pixels_equal_mxnet_imdecode():
    ref = {r["id"]: r for r in _records_json("pack__uniq__uniq")["records"]}
    ds = vision.ImageRecordDataset(UNIQ)
    gray = vision.ImageRecordDataset(UNIQ, flag=0)
    for i in range(len(ds)):
        img, label = ds[i]
        meta = ref[int(label)]  # uniq: label == header id
        assert list(img.shape) == meta["mx_imdecode"]["shape"]
        assert hashlib.sha256(img.asnumpy().tobytes()).hexdigest() == meta["mx_imdecode"]["sha256"]
        g, _ = gray[i]
        assert g.shape == img.shape[:2] + (1,)


def test_image_record_dataset_transform_and_multilabel():
    ds = vision.ImageRecordDataset(str(FIX / "pack/multilabel/ml.rec"),
                                   transform=lambda img, lab: (img.shape, lab))
    shape, lab = ds[0]
    assert len(shape) == 3 and isinstance(lab, np.ndarray) and lab.shape == (3,)
    assert lab[2] == lab[1] + 0.25  # ml.lst: class, index, index + 0.25


def test_broken_record_raises_mxnet_error_naming_it():
    ds = vision.ImageRecordDataset(str(FIX / "api/garbage.rec"))
    with pytest.raises(mx.base.MXNetError) as ei:
        ds[1]
    assert isinstance(ei.value, ImageDecodeError) and "garbage.rec" in str(ei.value)
    loader = gdata.DataLoader(ds, batch_size=2, num_workers=2)
    with pytest.raises(mx.base.MXNetError) as ei:  # raised in a worker process, re-raised here
        list(loader)
    assert isinstance(ei.value, ImageDecodeError) and "garbage.rec" in str(ei.value)
    loader.close()


def test_record_datasets_on_s3(s3_server):
    import fsspec
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for ext in (".rec", ".idx"):
        fs.put_file(UNIQ[:-4] + ext, f"{bucket}/uniq{ext}")
    old = dict(mx.storage_options)
    mx.storage_options.update(s3_server.storage_options)
    try:
        remote = vision.ImageRecordDataset(f"{bucket}/uniq.rec")
        local = vision.ImageRecordDataset(UNIQ)
        assert len(remote) == 24
        loader = gdata.DataLoader(remote, batch_size=8, num_workers=2,
                                  batchify_fn=lambda s: [x[1] for x in s])
        assert sum(list(loader), []) == [local[i][1] for i in range(24)]
        loader.close()
        for i in (0, 7, 23):
            assert np.array_equal(remote[i][0], local[i][0])
    finally:
        mx.storage_options.clear()
        mx.storage_options.update(old)


# ------------------------------------------------------------------------------ image folders
def _noshuffle_lst():
    out = []
    for line in (FIX / "im2rec/noshuffle.lst").read_text().splitlines():
        _, label, rel = line.split("\t")
        out.append((rel, int(float(label))))
    return out


@pytest.mark.filterwarnings("ignore:Ignoring .*manifest.tsv")
def test_image_folder_dataset_matches_im2rec_walk_order():
    with pytest.warns(UserWarning, match="manifest.tsv, which is not a directory"):
        ds = vision.ImageFolderDataset(str(IMAGES))
    assert ds.synsets == ["n00000000_china", "n00000001_flower", "n00000002_grace_hopper"]
    got = [(os.path.relpath(p, IMAGES), lab) for p, lab in ds.items]
    assert got == _noshuffle_lst()  # same files, order and labels as MXNet's im2rec --list
    img, label = ds[0]
    want = cv2.imread(str(IMAGES / got[0][0]))[:, :, ::-1]
    assert label == 0 and np.array_equal(img.asnumpy(), want)
    gray = vision.ImageFolderDataset(str(IMAGES), flag=0)
    assert gray[1][0].shape[2] == 1


def test_image_folder_dataset_skips_other_files(tmp_path):
    for cls in ("b", "a"):
        (tmp_path / cls).mkdir()
        ok, png = cv2.imencode(".png", np.full((4, 5, 3), 9, np.uint8))
        (tmp_path / cls / "x.PNG").write_bytes(png.tobytes())
    (tmp_path / "a" / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    with pytest.warns(UserWarning, match=r"notes.txt of type \.txt"):
        ds = vision.ImageFolderDataset(str(tmp_path), transform=lambda x, y: (x.shape, y + 100))
    assert ds.synsets == ["a", "b", "empty"] and len(ds) == 2
    assert ds[1] == ((4, 5, 3), 101)


@pytest.mark.filterwarnings("ignore:Ignoring .*manifest.tsv")
def test_image_folder_dataset_on_s3(s3_server):
    import fsspec
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for rel, _ in _noshuffle_lst():
        fs.put_file(str(IMAGES / rel), f"{bucket}/imgs/{rel}")
    ds = vision.ImageFolderDataset(f"{bucket}/imgs", storage_options=s3_server.storage_options)
    local = vision.ImageFolderDataset(str(IMAGES))
    assert ds.synsets == local.synsets
    assert [(p.rsplit("/imgs/", 1)[1], lab) for p, lab in ds.items] == _noshuffle_lst()
    for i in (0, 9, 23):
        assert np.array_equal(ds[i][0], local[i][0]) and ds[i][1] == local[i][1]


# ------------------------------------------------------------------------------ Dataset API
def test_dataset_api():
    a = gdata.ArrayDataset(np.arange(10), mx.nd.array(np.arange(10) * 2))
    assert len(a) == 10 and a[3] == (3, 6.0)
    single = gdata.ArrayDataset(np.arange(5))
    assert single[2] == 2
    with pytest.raises(ValueError, match="same length"):
        gdata.ArrayDataset(np.arange(3), np.arange(4))
    s = gdata.SimpleDataset(list("abcdefg"))
    assert [s.shard(3, i)[j] for i in range(3) for j in range(len(s.shard(3, i)))] == list("abcdefg")
    assert [len(s.shard(3, i)) for i in range(3)] == [3, 2, 2]
    assert [s.take(2)[i] for i in range(2)] == ["a", "b"] and len(s.take(None)) == 7
    f = s.filter(lambda c: c in "aeiou")
    assert [f[i] for i in range(len(f))] == ["a", "e"]
    t = a.transform(lambda x, y: x + y)
    assert t[4] == 12
    tf = a.transform_first(lambda x: -x, lazy=False)
    assert tf[4] == (-4, 8.0) and isinstance(tf, gdata.SimpleDataset)
    assert [s.sample([6, 0])[i] for i in range(2)] == ["g", "a"]


# ------------------------------------------------------------------------------ DataLoader
@pytest.mark.parametrize("last_batch, sizes", [("keep", [4, 4, 2]), ("discard", [4, 4]),
                                               (None, [4, 4, 2])])
def test_dataloader_last_batch(last_batch, sizes):
    ds = gdata.ArrayDataset(np.arange(10, dtype=np.float32), np.arange(10))
    loader = gdata.DataLoader(ds, batch_size=4, last_batch=last_batch)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == sizes and len(loader) == len(sizes)
    assert np.concatenate([b[0].asnumpy() for b in batches]).tolist() == list(range(sum(sizes)))
    data, label = batches[0]
    assert isinstance(data, mx.nd.NDArray) and data.dtype == np.float32
    assert label.dtype == np.int64  # numbers keep their numpy dtype, as MXNet


def test_dataloader_rollover_carries_the_tail():
    ds = gdata.SimpleDataset(list(range(10)))
    loader = gdata.DataLoader(ds, batch_size=4, last_batch="rollover")
    first = [b.tolist() for b in loader]
    assert first == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(loader) == 3  # 2 carried + 10
    second = [b.tolist() for b in loader]
    assert second == [[8, 9, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]


def test_dataloader_argument_rules():
    ds = gdata.SimpleDataset(list(range(6)))
    with pytest.raises(ValueError, match="shuffle must not be specified"):
        gdata.DataLoader(ds, 2, shuffle=True, sampler=gdata.SequentialSampler(6))
    with pytest.raises(ValueError, match="must not be specified if batch_sampler"):
        gdata.DataLoader(ds, 2, batch_sampler=[[0, 1]])
    with pytest.raises(ValueError, match="batch_size must be specified"):
        gdata.DataLoader(ds)
    with pytest.raises(ValueError, match="last_batch must be one of"):
        gdata.DataLoader(ds, 2, last_batch="pad")
    rev = gdata.DataLoader(ds, 4, sampler=[5, 4, 3, 2, 1, 0])
    assert [b.tolist() for b in rev] == [[5, 4, 3, 2], [1, 0]]
    custom = gdata.DataLoader(ds, batch_sampler=[[0, 5], [1]], batchify_fn=lambda s: sum(s))
    assert list(custom) == [5, 1]


def test_dataloader_shuffle_is_a_permutation_and_seeded():
    ds = gdata.SimpleDataset(list(range(50)))
    mx.random.seed(7)
    a = np.concatenate([b.asnumpy() for b in gdata.DataLoader(ds, 8, shuffle=True)])
    mx.random.seed(7)
    b = np.concatenate([b.asnumpy() for b in gdata.DataLoader(ds, 8, shuffle=True)])
    assert sorted(a.tolist()) == list(range(50)) and a.tolist() != list(range(50))
    assert a.tolist() == b.tolist()


def _pid_batch(samples):
    return os.getpid(), [int(s) for s in samples]


def test_dataloader_workers_are_processes_and_keep_order():
    ds = gdata.SimpleDataset(list(range(20)))
    loader = gdata.DataLoader(ds, batch_size=3, num_workers=2, batchify_fn=_pid_batch,
                              prefetch=4)
    out = list(loader)
    assert [x for _, b in out for x in b] == list(range(20))
    pids = {p for p, _ in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    again = list(loader)  # the pool is reused for the next epoch
    assert [x for _, b in again for x in b] == list(range(20))
    loader.close()
    threads = gdata.DataLoader(ds, batch_size=3, num_workers=2, thread_pool=True,
                               batchify_fn=_pid_batch)
    assert {p for p, _ in threads} == {os.getpid()}
    threads.close()


def test_dataloader_augmentation_identical_for_any_worker_count():
    t = transforms.Compose([transforms.RandomResizedCrop(24), transforms.RandomFlipLeftRight(),
                            transforms.RandomColorJitter(0.4, 0.4, 0.4, 0.1),
                            transforms.RandomLighting(0.1), transforms.ToTensor()])
    ds = vision.ImageRecordDataset(UNIQ).transform_first(t)
    runs = []
    for workers, threads in ((0, False), (2, False), (2, True)):
        mx.random.seed(11)
        loader = gdata.DataLoader(ds, batch_size=5, shuffle=True, num_workers=workers,
                                  thread_pool=threads)
        runs.append([(d.asnumpy(), l.asnumpy()) for d, l in loader])
        loader.close()
    for other in runs[1:]:
        assert len(other) == len(runs[0]) == 5
        for (d0, l0), (d1, l1) in zip(runs[0], other):
            assert np.array_equal(d0, d1) and np.array_equal(l0, l1)
    d = runs[0][0][0]
    assert d.shape == (5, 3, 24, 24) and d.dtype == np.float32
    # different images in a batch got different crops/jitter: not all equal to one another
    assert len({hashlib.sha256(x.tobytes()).hexdigest() for x in d}) == 5


# ------------------------------------------------------------------------------ transforms
def test_gluon_pipeline_equals_mxnet_image_iter_pixels():
    """Resize(36, keep_ratio) + CenterCrop(32) (bilinear) = MXNet ImageIter's
    CreateAugmenter(resize=36, inter_method=1) batches, to the bit, after (x-mean)/std."""
    cfg = json.loads((FIX / "reads/iters/ii_center_norm_bilinear.json").read_text())
    mean = np.array(cfg["create_augmenter"]["mean"], np.float32)
    std = np.array(cfg["create_augmenter"]["std"], np.float32)
    want = np.load(FIX / "reads/iters/ii_center_norm_bilinear.data.npy")
    t = transforms.Compose([transforms.Resize(36, keep_ratio=True), transforms.CenterCrop(32),
                            transforms.Cast("float32")])
    ds = vision.ImageRecordDataset(ALL, transform=lambda img, lab: t(img))
    got = np.stack([((ds[i].asnumpy() - mean) / std).transpose(2, 0, 1) for i in range(24)])
    assert np.array_equal(got, want[:24])


def test_to_tensor_normalize_cast():
    img = mx.nd.array(np.arange(2 * 3 * 3).reshape(2, 3, 3), dtype=np.uint8)
    t = transforms.ToTensor()(img)
    assert t.shape == (3, 2, 3) and t.dtype == np.float32
    assert np.allclose(t.asnumpy(), img.asnumpy().transpose(2, 0, 1) / 255.0)
    assert transforms.ToTensor()(mx.nd.stack(img, img)).shape == (2, 3, 2, 3)
    n = transforms.Normalize(mean=(0, 1, 2), std=(3, 2, 1))(t)
    ref = (t.asnumpy() - np.array([0, 1, 2])[:, None, None]) / np.array([3, 2, 1])[:, None, None]
    assert np.allclose(n.asnumpy(), ref)
    assert np.allclose(transforms.Normalize(0.5, 2.0)(t).asnumpy(), (t.asnumpy() - 0.5) / 2)
    assert transforms.Cast("float16")(img).dtype == np.float16
    with pytest.raises(ValueError):
        transforms.ToTensor()(mx.nd.zeros((4, 4)))


def test_resize_and_crops():
    rng = np.random.default_rng(3)
    img = mx.nd.array(rng.integers(0, 255, (40, 60, 3)), dtype=np.uint8)
    r = transforms.Resize((30, 20))(img)
    assert r.shape == (20, 30, 3)
    assert np.array_equal(r.asnumpy(), cv2.resize(img.asnumpy(), (30, 20),
                                                  interpolation=cv2.INTER_LINEAR))
    assert transforms.Resize(25)(img).shape == (25, 25, 3)
    assert transforms.Resize(25, keep_ratio=True)(img).shape == (25, 37, 3)
    assert transforms.Resize(10)(mx.nd.stack(img, img)).shape == (2, 10, 10, 3)
    c = transforms.CenterCrop((20, 10))(img)
    assert np.array_equal(c.asnumpy(), img.asnumpy()[15:25, 20:40])
    mx.random.seed(0)
    rrc = transforms.RandomResizedCrop((16, 12), scale=(0.2, 0.5))
    outs = [rrc(img).asnumpy() for _ in range(5)]
    assert all(o.shape == (12, 16, 3) and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) == 5


def test_random_flip_left_right():
    img = mx.nd.array(np.arange(2 * 4 * 3).reshape(2, 4, 3), dtype=np.uint8)
    flip = transforms.RandomFlipLeftRight()
    mx.random.seed(5)
    outs = [flip(img).asnumpy() for _ in range(200)]
    flipped = sum(np.array_equal(o, img.asnumpy()[:, ::-1]) for o in outs)
    kept = sum(np.array_equal(o, img.asnumpy()) for o in outs)
    assert flipped + kept == 200 and 60 < flipped < 140


def test_colour_transforms_keep_dtype_and_do_not_touch_input():
    rng = np.random.default_rng(4)
    img = mx.nd.array(rng.integers(0, 255, (8, 8, 3)), dtype=np.uint8)
    before = img.asnumpy()
    for t in (transforms.RandomBrightness(0.5), transforms.RandomContrast(0.5),
              transforms.RandomSaturation(0.5), transforms.RandomHue(0.3),
              transforms.RandomColorJitter(0.3, 0.3, 0.3, 0.1), transforms.RandomLighting(0.5)):
        out = t(img)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.array_equal(img.asnumpy(), before)
    f = transforms.RandomBrightness(0.5)(img.astype(np.float32))
    assert f.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transforms.Compose([transforms.ToTensor()]).hybridize()


def test_split_and_load():
    x = mx.nd.array(np.arange(12).reshape(6, 2))
    parts = mx.gluon.utils.split_and_load(x, [mx.cpu(0), mx.cpu(1)])
    assert [p.tolist() for p in parts] == [x[:3].tolist(), x[3:].tolist()]
    assert mx.gluon.utils.split_and_load(x, [mx.cpu()])[0].shape == (6, 2)
    with pytest.raises(ValueError, match="evenly split"):
        mx.gluon.utils.split_and_load(x, [mx.cpu()] * 4)
    uneven = mx.gluon.utils.split_and_load(x, [mx.cpu()] * 4, even_split=False)
    assert [len(p) for p in uneven] == [1, 1, 1, 3]


def test_record_dataset_shared_by_threads_and_pickled():
    """One record handle, many threads (DataLoader(thread_pool=True)): reads are serialised,
    so every sample is the right record; the dataset pickles (spawned workers)."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor
    ds = gdata.RecordFileDataset(UNIQ)
    want = [ds[i] for i in range(len(ds))]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(ds.__getitem__, range(len(ds)))) == want
    back = pickle.loads(pickle.dumps(ds))
    assert [back[i] for i in range(len(back))] == want
