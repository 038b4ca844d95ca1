"""mxnet_compat: legacy MXNet data code runs with one import changed.

The centre piece is the InsightFace-style MXFaceDataset (the loader that keeps
MXNet installed only to read `.rec` files) imported from examples/port_legacy_mxnet.py,
so these tests check the example itself.
"""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudrec import mxnet_compat as mx

FIX = Path(__file__).parent / "fixtures" / "mxnet"


def _load_example(name):
    """Import examples/<name>.py as a module: the test runs the example's own code."""
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# InsightFace's recognition loader, unchanged but for the import line, as the example ships it.
MXFaceDataset = _load_example("port_legacy_mxnet").MXFaceDataset


def _faces(n=7, ids=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), i % ids) for i in range(n)]


def _write_insightface(writer_rec, faces, ids):
    """InsightFace layout: record 0 = header (flag 2: [first id record, end]), images
    1..n with [label, 0] labels, then one record per identity."""
    n = len(faces)
    writer_rec.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(2, [n + 1, n + 1 + ids], 0, 0), b""))
    for i, (img, lab) in enumerate(faces, 1):
        h = mx.recordio.IRHeader(2, [float(lab), 0.0], i, 0)
        writer_rec.write_idx(i, mx.recordio.pack_img(h, img[:, :, ::-1], quality=95, img_fmt=".png"))
    for k in range(ids):
        writer_rec.write_idx(n + 1 + k, mx.recordio.pack(mx.recordio.IRHeader(2, [0, 0], 0, 0), b""))
    writer_rec.close()


def test_insightface_loader_local(tmp_path):
    faces = _faces()
    _write_insightface(mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"),
                                                     str(tmp_path / "train.rec"), "w"), faces, 3)
    ds = MXFaceDataset(str(tmp_path), transform=lambda x: x.astype(np.float32) / 255.0)
    assert len(ds) == 7 and ds.header0 == (8, 11)
    for i in range(len(ds)):
        sample, label = ds[i]
        assert label == faces[i][1]
        assert sample.shape == (112, 112, 3) and sample.dtype == np.float32
        assert np.array_equal(sample, faces[i][0].astype(np.float32) / 255.0)  # PNG: lossless RGB


def test_insightface_loader_without_header_record(tmp_path):
    w = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"), str(tmp_path / "train.rec"), "w")
    for i, (img, lab) in enumerate(_faces(4), 0):
        w.write_idx(i, mx.recordio.pack_img((0, float(lab), i, 0), img, img_fmt=".png"))
    w.close()
    ds = MXFaceDataset(str(tmp_path))
    assert len(ds) == 4 and [ds[i][1] for i in range(4)] == [0, 1, 2, 0]
    assert type(ds[0][0]) is np.ndarray


@pytest.mark.s3
def test_insightface_loader_on_s3(s3_server, tmp_path):
    faces = _faces(5, ids=2)
    _write_insightface(mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"),
                                                     str(tmp_path / "train.rec"), "w"), faces, 2)
    import fsspec
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for f in ("train.rec", "train.idx"):
        fs.pipe_file(bucket.replace("s3://", "") + "/faces/" + f, (tmp_path / f).read_bytes())
    old = dict(mx.storage_options)
    mx.storage_options.update(s3_server.storage_options)  # the one line of configuration
    try:
        ds = MXFaceDataset(bucket + "/faces")
        assert len(ds) == 5
        assert [ds[i][1] for i in range(5)] == [f[1] for f in faces]
        assert np.array_equal(ds[3][0], faces[3][0])
    finally:
        mx.storage_options.clear()
        mx.storage_options.update(old)


def test_ndarray_shim():
    payload = (FIX / "images/n00000002_grace_hopper/n00000002_grace_hopper_00004.png").read_bytes()
    x = mx.image.imdecode(payload)
    assert isinstance(x, mx.nd.NDArray) and x.dtype == np.uint8 and x.shape[2] == 3
    a = x.asnumpy()
    assert type(a) is np.ndarray and np.array_equal(a, x)
    a[0, 0, 0] ^= 0xFF
    assert a[0, 0, 0] != x[0, 0, 0]  # asnumpy is a copy
    assert x.context == mx.cpu() and x.as_in_context(mx.gpu(0)) is x
    assert mx.nd.array([1, 2]).dtype == np.float32
    # MXNet's dtype rule: numpy input becomes float32 unless dtype= is given; NDArray keeps its own
    assert mx.nd.array(np.arange(3)).dtype == np.float32
    assert mx.nd.array(np.arange(3, dtype=np.uint8)).dtype == np.float32
    assert mx.nd.array(np.arange(3), dtype=np.int64).dtype == np.int64
    assert mx.nd.array(x).dtype == np.uint8  # x is an NDArray (imdecode's uint8)
    assert mx.nd.array([[3.5]]).asscalar() == 3.5
    assert mx.nd.concat(mx.nd.zeros((2, 1)), mx.nd.ones((2, 2))).shape == (2, 3)
    gray = mx.image.imdecode(payload, flag=0)
    assert gray.shape == x.shape[:2] + (1,)
    small, rect = mx.image.center_crop(x, (10, 8))
    assert isinstance(small, mx.nd.NDArray) and small.shape == (8, 10, 3) and len(rect) == 4
    assert mx.image.scale_down((640, 480), (720, 120)) == (640, 106)
    with pytest.raises(mx.base.MXNetError):  # legacy `except mx.base.MXNetError` still works
        mx.image.imdecode(b"not an image")


def test_augmenters_and_create_augmenter_return_ndarrays():
    x = mx.nd.array(np.random.default_rng(0).integers(0, 255, (40, 50, 3)), dtype=np.uint8)
    augs = mx.image.CreateAugmenter((3, 32, 32), resize=36, rand_mirror=True, mean=True, std=True)
    y = x
    for a in augs:
        y = a(y)
    assert isinstance(y, mx.nd.NDArray) and y.shape == (32, 32, 3) and y.dtype == np.float32
    assert json.loads(augs[0].dumps()) == ["resizeaug", {"size": 36, "interp": 2}]
    z = mx.image.HorizontalFlipAug(1.0)(x)
    assert isinstance(z, mx.nd.NDArray) and np.array_equal(z.asnumpy(), x.asnumpy()[:, ::-1])


def test_imageiter_and_io_through_compat():
    cfg = json.loads((FIX / "reads/iters/ii_center_norm_bilinear.json").read_text())
    it = mx.image.ImageIter(batch_size=5, data_shape=(3, 32, 32),
                            path_imgrec=str(FIX / "pack/passthrough/all.rec"),
                            path_imgidx=str(FIX / "pack/passthrough/all.idx"),
                            aug_list=mx.image.CreateAugmenter((3, 32, 32),
                                                              **cfg["create_augmenter"]))
    data = np.concatenate([b.data[0].asnumpy() for b in it])
    assert np.array_equal(data, np.load(FIX / "reads/iters/ii_center_norm_bilinear.data.npy"))
    nd_it = mx.io.NDArrayIter(mx.nd.array(np.arange(10)), batch_size=4)
    b = next(iter(nd_it))
    assert isinstance(b, mx.io.DataBatch) and b.data[0].asnumpy().tolist() == [0, 1, 2, 3]
    assert mx.io.DataDesc("data", (4,)) == ("data", (4,))
    from cloudrec.mxnet_compat import recordio  # `from mxnet import recordio` style
    assert recordio.MXIndexedRecordIO is mx.recordio.MXIndexedRecordIO


def test_image_record_iter_through_compat():
    it = mx.io.ImageRecordIter(path_imgrec=str(FIX / "pack/passthrough/all.rec"),
                               path_imgidx=str(FIX / "pack/passthrough/all.idx"),
                               data_shape=(3, 32, 32), batch_size=5, resize=36)
    b = it.next()
    assert b.data[0].asnumpy().shape == (5, 3, 32, 32) and b.label[0].asnumpy().shape == (5,)


def test_detection_names_are_ported():
    """mx.image.ImageDetIter / CreateDetAugmenter / Det* exist and return NDArrays."""
    rng = np.random.default_rng(0)
    augs = mx.image.CreateDetAugmenter((3, 32, 32), rand_mirror=True, mean=True, std=True)
    src = mx.nd.array(rng.integers(0, 255, (40, 50, 3)).astype(np.float32))
    label = np.array([[0, 0.1, 0.1, 0.5, 0.6]], np.float32)
    for aug in augs:
        src, label = aug(src, label)
    assert src.shape == (32, 32, 3) and hasattr(src, "asnumpy")
    assert label.shape == (1, 5) and 0 <= label[0, 1] < label[0, 3] <= 1
    for name in ("ImageDetIter", "DetBorrowAug", "DetRandomSelectAug", "DetHorizontalFlipAug",
                 "DetRandomCropAug", "DetRandomPadAug"):
        assert hasattr(mx.image, name), name
