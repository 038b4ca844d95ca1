"""mxnet_compat follows MXNet's conventions where legacy code relies on them (issue 16):
unknown ImageRecordIter keywords, MXNetError, mx.nd.save/load, mx.nd.array's dtype rule,
imrotate/random_rotate, copyMakeBorder(out=), mx.img.image, NDArrayIter over h5py/scipy.sparse.
"""
import json
import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudrec import mxnet_compat as mx
from cloudrec.errors import CloudrecError, ConfigError, ImageDecodeError
from cloudrec.iterators import ImageRecordIter

FIX = Path(__file__).parent / "fixtures" / "mxnet"
UNIQ = str(FIX / "pack" / "uniq" / "uniq.rec")
ND = FIX / "ndarray"


# ------------------------------------------------------------------------------ keywords
def test_unknown_keyword_warns_with_closest_name_and_is_ignored():
    """MXNet's own test_Cifar10Rec passes the typo ``and_mirror``: it must run."""
    kw = dict(path_imgrec=UNIQ, data_shape=(3, 32, 32), batch_size=6, resize=36)
    with pytest.warns(UserWarning, match=r"'and_mirror' ignored; did you mean 'rand_mirror'"):
        it = mx.io.ImageRecordIter(and_mirror=True, **kw)
    ref = mx.io.ImageRecordIter(**kw)
    a, b = it.next(), ref.next()
    assert np.array_equal(a.data[0].asnumpy(), b.data[0].asnumpy())
    assert isinstance(a.data[0], mx.nd.NDArray)
    with pytest.warns(UserWarning, match="'zzz_unrelated' ignored"):
        mx.io.ImageRecordUInt8Iter(zzz_unrelated=1, **kw).close()
    it.close()
    ref.close()


def test_cloudrec_api_stays_strict():
    with pytest.raises(ConfigError, match="did you mean 'rand_mirror'"):
        ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), batch_size=6, and_mirror=True)


def test_known_keywords_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mx.io.ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), batch_size=6,
                              resize=36, rand_mirror=True, seed=1, layout="NCHW").close()


# ------------------------------------------------------------------------------ MXNetError
def _raises_mxnet(fn, original):
    with pytest.raises(mx.base.MXNetError) as ei:
        fn()
    assert isinstance(ei.value, original), type(ei.value).__mro__
    return ei.value


def test_errors_are_mxnet_errors_and_keep_their_class(tmp_path):
    e = _raises_mxnet(lambda: mx.image.imread(str(tmp_path / "missing.jpg")), FileNotFoundError)
    assert "missing.jpg" in str(e)
    _raises_mxnet(lambda: mx.image.imread(f"file://{tmp_path}/missing.jpg"), FileNotFoundError)
    _raises_mxnet(lambda: mx.image.imresize(mx.nd.zeros((4, 4, 3), dtype="uint8"), 2, 2,
                                            interp=-1), ValueError)
    _raises_mxnet(lambda: mx.image.imdecode(b""), ImageDecodeError)
    _raises_mxnet(lambda: mx.image.imdecode(b"not an image at all"), ImageDecodeError)
    e = _raises_mxnet(lambda: mx.io.ImageRecordIter(path_imgrec=UNIQ, data_shape=(5, 28, 28),
                                                    batch_size=2), ConfigError)
    assert "channels must be 1, 3 or 4" in str(e)
    _raises_mxnet(lambda: mx.image.ImageIter(batch_size=2, data_shape=(5, 28, 28),
                                             path_imgrec=UNIQ), ValueError)
    _raises_mxnet(lambda: mx.io.ImageRecordIter(path_imgrec=str(tmp_path / "no.rec"),
                                                data_shape=(3, 28, 28), batch_size=2), OSError)
    _raises_mxnet(lambda: mx.recordio.MXIndexedRecordIO(str(tmp_path / "no.idx"),
                                                        str(tmp_path / "no.rec"), "r"), OSError)
    e = _raises_mxnet(lambda: mx.nd.load(str(FIX / "pack/uniq/uniq.idx")), CloudrecError)
    assert "uniq.idx" in str(e)


def test_mxnet_error_of_a_broken_record_names_it_and_pickles():
    it = mx.io.ImageRecordIter(path_imgrec=str(FIX / "api/garbage.rec"),
                               path_imgidx=str(FIX / "api/garbage.idx"),
                               data_shape=(3, 32, 32), batch_size=3)
    e = _raises_mxnet(it.next, ImageDecodeError)
    assert "garbage.rec" in str(e)
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, mx.base.MXNetError) and isinstance(back, ImageDecodeError)
    assert str(back) == str(e)
    it.close()


def test_stop_iteration_and_type_errors_pass_through():
    it = mx.io.NDArrayIter(np.arange(4, dtype=np.float32), batch_size=4)
    next(it)
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(TypeError) as ei:
        mx.io.ImageRecordIter(UNIQ)
    assert not isinstance(ei.value, mx.base.MXNetError)


# ------------------------------------------------------------------------------ mx.nd
@pytest.mark.parametrize("name", ["dict.params", "list.nd", "single.nd", "uniq_mean_3x32x32.bin"])
def test_nd_load_and_save_mxnet_files(tmp_path, name):
    exp = json.loads((ND / "expected.json").read_text())[name]
    got = mx.nd.load(str(ND / name))
    if isinstance(exp, dict):
        assert list(got) == list(exp)
        for k, spec in exp.items():
            assert isinstance(got[k], mx.nd.NDArray) and list(got[k].shape) == spec["shape"]
            assert np.allclose(got[k].asnumpy().ravel().astype(np.float64), spec["values"])
    else:
        assert [list(a.shape) for a in got] == [s["shape"] for s in exp]
    out = tmp_path / name
    mx.nd.save(str(out), got)
    assert out.read_bytes() == (ND / name).read_bytes()


def test_nd_save_load_on_s3(s3_server):
    bucket = s3_server.new_bucket()
    old = dict(mx.storage_options)
    mx.storage_options.update(s3_server.storage_options)
    try:
        arrs = {"w": mx.nd.array([[1, 2], [3, 4]]), "b": np.arange(3, dtype=np.int64)}
        mx.nd.save(f"{bucket}/m.params", arrs)
        back = mx.nd.load(f"{bucket}/m.params")
        single = mx.nd.array(np.ones(2))
        mx.nd.save(f"{bucket}/one.nd", single)
        (one,) = mx.nd.load(f"{bucket}/one.nd")
    finally:
        mx.storage_options.clear()
        mx.storage_options.update(old)
    assert back["w"].dtype == np.float32 and back["w"].tolist() == [[1, 2], [3, 4]]
    assert back["b"].dtype == np.int64 and back["b"].tolist() == [0, 1, 2]
    assert one.tolist() == [1.0, 1.0]


def test_nd_array_dtype_rule():
    u8 = np.arange(6, dtype=np.uint8).reshape(2, 3)
    a = mx.nd.array(u8)
    assert a.dtype == np.float32 and a.tolist() == u8.tolist()
    assert mx.nd.array(u8, dtype="uint8").dtype == np.uint8
    nd_u8 = mx.nd.array(u8, dtype=np.uint8)
    assert mx.nd.array(nd_u8).dtype == np.uint8  # an NDArray source keeps its dtype
    with pytest.raises(TypeError, match="array like"):
        mx.nd.array(object())


# ------------------------------------------------------------------------------ mx.image
def test_img_image_alias():
    assert mx.img is mx.image and mx.img.image.imread is mx.image.imread
    from cloudrec.mxnet_compat.image import image as image_mod  # `from mxnet.image import image`
    assert image_mod.ImageIter is mx.image.ImageIter


def test_copy_make_border_out():
    src = mx.nd.array(np.random.default_rng(0).integers(0, 255, (5, 6, 3)), dtype=np.uint8)
    for border in range(5):
        want = cv2.copyMakeBorder(src.asnumpy(), 1, 2, 3, 4, border, value=[7, 7, 7, 7])
        out = mx.nd.zeros(want.shape, dtype="uint8")
        got = mx.image.copyMakeBorder(src, 1, 2, 3, 4, type=border, value=7, out=out)
        assert np.array_equal(out.asnumpy(), want) and np.array_equal(got.asnumpy(), want)
    with pytest.raises(ValueError, match="out has shape"):
        mx.image.copyMakeBorder(src, 1, 1, 1, 1, out=mx.nd.zeros((2, 2, 3), dtype="uint8"))


def _gradient_chw():
    xlin = np.expand_dims(np.linspace(0, 0.5, 30), axis=1)
    ylin = np.expand_dims(np.linspace(0, 0.5, 60), axis=0)
    np_img = np.expand_dims(xlin + ylin, axis=2)
    return np_img, mx.nd.array(np_img.transpose((2, 0, 1)))


@pytest.mark.parametrize("angle", [6, -20, 45, 90])
def test_imrotate_matches_scipy_as_in_mxnets_test(angle):
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    np_img, nd_img = _gradient_chw()
    rot = mx.image.imrotate(nd_img, angle)
    assert isinstance(rot, mx.nd.NDArray) and rot.shape == (1, 30, 60)
    ref = scipy_ndimage.rotate(np_img, angle, axes=(1, 0), reshape=False, order=1,
                               mode="constant", prefilter=False)
    got = rot.asnumpy().transpose((1, 2, 0))
    assert np.allclose(got[10:20, 20:40], ref[10:20, 20:40], atol=1e-5)
    batch = mx.image.imrotate(mx.nd.stack(nd_img, nd_img, nd_img), angle)
    for img in batch:
        assert np.allclose(img.asnumpy().transpose((1, 2, 0))[10:20, 20:40], ref[10:20, 20:40],
                           atol=1e-5)


def test_imrotate_zoom_and_errors():
    rng = np.random.default_rng(1)
    img = mx.nd.array(rng.uniform(0.1, 1, (3, 30, 60)))
    plain = mx.image.imrotate(img, 30)
    zin = mx.image.imrotate(img, 30, zoom_in=True)
    zout = mx.image.imrotate(img, 30, zoom_out=True)
    assert (zin.asnumpy() == 0).sum() == 0  # zoom_in: no padding shows
    assert (zout.asnumpy() == 0).sum() > (plain.asnumpy() == 0).sum() > 0
    assert np.allclose(mx.image.imrotate(img, 0).asnumpy(), img.asnumpy(), atol=1e-5)  # f32 grid
    batch = mx.nd.array(rng.uniform(0, 1, (5, 3, 30, 60)))
    out = mx.image.imrotate(batch, mx.nd.array([1, 2, 3, 4, 5]))
    assert out.shape == (5, 3, 30, 60)
    assert np.allclose(out[2].asnumpy(), mx.image.imrotate(batch[2], 3).asnumpy(), atol=1e-5)
    with pytest.raises(ValueError):
        mx.image.imrotate(batch, 5, zoom_in=True, zoom_out=True)
    with pytest.raises(TypeError):
        mx.image.imrotate(img, mx.nd.array([1, 2, 3, 4, 5]))
    with pytest.raises(TypeError):
        mx.image.imrotate(img.astype(np.float16), 5)
    with pytest.raises(ValueError):
        mx.image.imrotate(batch, mx.nd.array([1, 2]))
    with pytest.raises(ValueError):
        mx.image.imrotate(mx.nd.zeros((4, 4)), 5)


def test_random_rotate_shapes_and_range():
    rng = np.random.default_rng(2)
    img = mx.nd.array(rng.uniform(0, 1, (3, 30, 60)))
    assert mx.image.random_rotate(img, [-5.0, 5.0]).shape == (3, 30, 60)
    batch = mx.nd.stack(img, img, img)
    out = mx.image.random_rotate(batch, [-5.0, 5.0])
    assert out.shape == (3, 3, 30, 60)
    assert not np.allclose(out[0].asnumpy(), out[1].asnumpy())  # one angle per image
    same = mx.image.random_rotate(img, [10.0, 10.0])
    assert np.allclose(same.asnumpy(), mx.image.imrotate(img, 10.0).asnumpy(), atol=1e-5)


# ------------------------------------------------------------------------------ NDArrayIter
def _last_batch_counts(data, label):
    counts = {}
    for handle in ("pad", "discard", "roll_over"):
        it = mx.io.NDArrayIter(data, label, 128, last_batch_handle=handle)
        first = list(it)
        it.reset()
        second = list(it)
        counts[handle] = (len(first), len(second), first[-1].pad)
        assert isinstance(first[0].data[0], mx.nd.NDArray)
    return counts


def test_ndarray_iter_over_h5py(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = np.arange(1000 * 4, dtype=np.float64).reshape(1000, 2, 2)
    labels = np.arange(1000, dtype=np.float64)[:, None]
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=labels)
        counts = _last_batch_counts(f["data"], f["label"])
        assert counts["pad"] == (8, 8, 24) and counts["discard"][:2] == (7, 7)
        assert counts["roll_over"][:2] == (7, 8)
        assert counts == _last_batch_counts(data, labels)  # same as over numpy
        it = mx.io.NDArrayIter(f["data"], f["label"], 100, shuffle=True, seed=3)
        batches = list(it)
    got = np.concatenate([b.data[0].asnumpy() for b in batches])
    lab = np.concatenate([b.label[0].asnumpy() for b in batches])
    assert sorted(got[:, 0, 0].tolist()) == data[:, 0, 0].tolist()
    assert not np.array_equal(got[:, 0, 0], data[:, 0, 0])  # shuffled
    assert np.array_equal(got[:, 0, 0] / 4, lab[:, 0])  # rows and labels stay paired


def test_ndarray_iter_over_csr():
    sp = pytest.importorskip("scipy.sparse")
    m = sp.random(13, 7, density=0.3, format="csr", random_state=0, dtype=np.float32)
    dns = m.toarray()
    with pytest.raises(NotImplementedError, match="discard"):
        mx.io.NDArrayIter({"data": m}, dns, 4)
    it = mx.io.NDArrayIter(m, dns, 4, last_batch_handle="discard")
    batches = list(it)
    assert len(batches) == 3
    for i, b in enumerate(batches):
        assert b.data[0].stype == "csr"
        assert np.array_equal(b.data[0].asnumpy(), dns[4 * i:4 * i + 4])
    shuffled = list(mx.io.NDArrayIter({"data": m}, dns, 4, shuffle=True,
                                      last_batch_handle="discard"))
    assert len(shuffled) == 3
    for b in shuffled:
        assert np.array_equal(b.data[0].asnumpy(), b.label[0].asnumpy())


def test_random_rotate_follows_mx_random_seed():
    img = mx.nd.array(np.random.default_rng(5).uniform(0, 1, (3, 20, 20)))
    mx.random.seed(3)
    a = mx.image.random_rotate(img, [-30.0, 30.0]).asnumpy()
    mx.random.seed(3)
    b = mx.image.random_rotate(img, [-30.0, 30.0]).asnumpy()
    c = mx.image.random_rotate(img, [-30.0, 30.0]).asnumpy()
    assert np.array_equal(a, b) and not np.array_equal(b, c)


def test_module_paths_legacy_code_imports():
    import cloudrec.mxnet_compat.ndarray as nd_mod  # `import mxnet.ndarray as nd`
    from cloudrec.mxnet_compat import context  # `from mxnet import context`
    from cloudrec.mxnet_compat.gluon.data.dataset import Dataset  # noqa: F401
    from cloudrec.mxnet_compat.gluon.data.vision.datasets import ImageRecordDataset  # noqa: F401
    assert nd_mod.full((2,), 3).tolist() == [3.0, 3.0]
    assert context.cpu_pinned(0).device_type == "cpu_pinned" and context.num_gpus() == 0
    it = mx.io.ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), batch_size=6, resize=36)
    assert isinstance(it, mx.io.ImageRecordIter) and isinstance(it, ImageRecordIter)
    it.close()


def test_mxnets_cifar_test_shape_runs(tmp_path):
    """MXNet's test_Cifar10Rec / test_image_iter_exception, on the 24-record fixture: a mean
    file that does not exist yet, the typo ``and_mirror``, one exact epoch; then the same with
    ``data_shape=(5, 28, 28)`` raises MXNetError."""
    kw = dict(path_imgrec=UNIQ, mean_img=str(tmp_path / "mean.bin"), rand_crop=False,
              and_mirror=False, shuffle=False, batch_size=6, preprocess_threads=4,
              prefetch_buffer=1, resize=36)
    with pytest.warns(UserWarning, match="and_mirror"):
        it = mx.io.ImageRecordIter(data_shape=(3, 32, 32), **kw)
    labels = np.concatenate([b.label[0].asnumpy() for b in it])
    assert sorted(labels.tolist()) == list(range(24))  # uniq: label = record index, once each
    it.close()
    assert mx.nd.load(str(tmp_path / "mean.bin"))["mean_img"].shape == (3, 32, 32)
    with pytest.warns(UserWarning, match="and_mirror"), pytest.raises(mx.base.MXNetError):
        mx.io.ImageRecordIter(data_shape=(5, 28, 28), **kw)
