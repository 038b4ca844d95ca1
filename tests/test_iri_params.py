"""ImageRecordIter keyword arguments: MXNet's names and value forms, validation, output forms."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from cloudrec.errors import ConfigError, ImageListError, LabelError
from cloudrec.iterators import ImageRecordInt8Iter, ImageRecordIter, ImageRecordUInt8Iter
from cloudrec.iterators.record_params import known_keywords, parse_kwargs
from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack, pack_img

FX = os.path.join(os.path.dirname(__file__), "fixtures", "mxnet")
REC = os.path.join(FX, "pack", "passthrough", "all.rec")
IDX = os.path.join(FX, "pack", "passthrough", "all.idx")
BASE = dict(path_imgrec=REC, path_imgidx=IDX, data_shape=(3, 32, 32), batch_size=8, resize=36)

SPEC_PARAMS = """path_imgrec path_imglist path_imgidx aug_seq label_width data_shape
preprocess_threads verbose num_parts part_index device_id shuffle_chunk_size shuffle_chunk_seed
seed_aug shuffle seed batch_size round_batch prefetch_buffer ctx dtype resize rand_crop
random_resized_crop max_rotate_angle max_aspect_ratio min_aspect_ratio max_shear_ratio
max_crop_size min_crop_size max_random_scale min_random_scale max_random_area min_random_area
max_img_size min_img_size brightness contrast saturation pca_noise random_h random_s random_l
rotate fill_value inter_method pad rotate_list mirror rand_mirror mean_img mean_r mean_g mean_b
mean_a std_r std_g std_b std_a scale max_random_contrast max_random_illumination data_name
label_name""".split()


def test_every_spec_parameter_is_accepted():
    assert set(SPEC_PARAMS) <= set(known_keywords())
    kw = dict(BASE, verbose=False, device_id=-1, ctx="cpu", shuffle_chunk_size=0,
              shuffle_chunk_seed=1, aug_seq="aug_default", prefetch_buffer=2)
    with ImageRecordIter(**kw) as it:
        assert next(it).data[0].shape == (8, 3, 32, 32)


def test_unknown_keyword_names_closest():
    with pytest.raises(ConfigError, match=r"'and_mirror'.*did you mean 'rand_mirror'"):
        ImageRecordIter(and_mirror=False, **BASE)
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        ImageRecordIter(**{k: v for k, v in BASE.items() if k != "batch_size"}, batchsize=8)


def test_positional_arguments_rejected():
    with pytest.raises(TypeError, match="keyword arguments"):
        ImageRecordIter(REC)


def test_mxnet_string_values_are_parsed():
    p = parse_kwargs(dict(path_imgrec=REC, data_shape="(3, 224, 224)", batch_size="16",
                          rand_crop="True", shuffle="0", mean_r="123.68", rotate_list="0,90",
                          seed_aug="None", dtype="None"))
    assert p.data_shape == (3, 224, 224) and p.batch.batch_size == 16
    assert p.aug.rand_crop is True and p.record.shuffle is False
    assert p.norm.mean_r == pytest.approx(123.68) and p.aug.rotate_list == (0, 90)
    assert p.parser.seed_aug is None and p.out_dtype == np.float32


@pytest.mark.parametrize("bad,match", [
    (dict(data_shape=(2, 32, 32)), "Invalid output shape"),
    (dict(data_shape=(3, 32)), "data_shape"),
    (dict(batch_size=0), "batch_size"),
    (dict(part_index=2, num_parts=2), "part_index"),
    (dict(inter_method=5), "inter_method"),
    (dict(dtype="bfloat16"), "dtype"),
    (dict(std_g=0), "std_g"),
    (dict(label_width=0), "label_width"),
    (dict(random_resized_crop=True, rand_crop=True), "random_resized_crop"),
    (dict(max_crop_size=20), "crop sizes"),
    (dict(max_aspect_ratio=1.5), "aspect"),
    (dict(aug_seq="aug_default,det_aug_default"), "aug_seq"),
    (dict(rand_crop="maybe"), "rand_crop must be a bool"),
    (dict(layout="CHWN"), "layout"),
    (dict(preprocess_threads=0), "preprocess_threads"),
    (dict(max_rotate_angle=10, inter_method=0), "inter_method 0"),
])
def test_invalid_values_raise_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        ImageRecordIter(**dict(BASE, **bad))


def test_required_arguments():
    with pytest.raises(ConfigError, match="path_imgrec"):
        ImageRecordIter(data_shape=(3, 8, 8), batch_size=1)
    with pytest.raises(ConfigError, match="data_shape"):
        ImageRecordIter(path_imgrec=REC, batch_size=1)


def test_dtypes_and_nhwc_layout():
    with ImageRecordIter(dtype="uint8", **BASE) as it:
        u8 = next(it).data[0]
    with ImageRecordUInt8Iter(layout="NHWC", **BASE) as it:
        assert it.provide_data[0].shape == (8, 32, 32, 3)
        assert it.provide_data[0].layout == "NHWC"
        nhwc = next(it).data[0]
    assert u8.dtype == nhwc.dtype == np.uint8 and nhwc.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(nhwc, u8.transpose(0, 2, 3, 1))
    mean = dict(mean_r=123.68, mean_g=116.779, mean_b=103.939)
    with ImageRecordInt8Iter(**BASE, **mean) as it:
        i8 = next(it).data[0]
    ref = np.clip(u8.astype(np.int16) - np.array([124, 117, 104])[None, :, None, None],
                  -128, 127)
    np.testing.assert_array_equal(i8, ref.astype(np.int8))
    with ImageRecordIter(dtype="float32", layout="NHWC", **BASE, **mean) as it:
        f = next(it).data[0]
    with ImageRecordIter(dtype="float16", **BASE, **mean) as it:
        h = next(it).data[0]
    assert h.dtype == np.float16
    np.testing.assert_allclose(h.astype(np.float32), f.transpose(0, 3, 1, 2), atol=0.1)


def test_four_channel_output_keeps_alpha(tmp_path):
    rec, idx = str(tmp_path / "a.rec"), str(tmp_path / "a.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    img = np.zeros((8, 8, 4), np.uint8)
    img[..., 0], img[..., 1], img[..., 2], img[..., 3] = 10, 20, 30, 40   # BGRA
    w.write_idx(0, pack_img(IRHeader(0, 1.0, 0, 0), img, img_fmt=".png"))
    w.close()
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(4, 8, 8), batch_size=1,
                         dtype="uint8") as it:
        out = next(it).data[0][0]
    assert out[:, 0, 0].tolist() == [30, 20, 10, 40]                     # RGBA


def test_label_width_from_packed_labels_and_imglist(tmp_path):
    rec, idx = str(tmp_path / "m.rec"), str(tmp_path / "m.idx")
    w = MXIndexedRecordIO(idx, rec, "w")
    img = np.full((4, 4, 3), 9, np.uint8)
    for i in range(3):
        w.write_idx(i, pack_img(IRHeader(0, [i, i + 0.5], 100 + i, 0), img, img_fmt=".png"))
    w.close()
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 4, 4), batch_size=3)
    with ImageRecordIter(label_width=2, **kw) as it:
        b = next(it)
        assert it.provide_label[0].shape == (3, 2)
    np.testing.assert_array_equal(b.label[0], [[0, 0.5], [1, 1.5], [2, 2.5]])
    lst = tmp_path / "m.lst"
    lst.write_text("".join(f"{100 + i}\t{7 * i}\t{i}\t{i}\tx.png\n" for i in range(3)))
    with ImageRecordIter(label_width=3, path_imglist=str(lst), **kw) as it:
        b = next(it)
    np.testing.assert_array_equal(b.label[0], [[0, 0, 0], [7, 1, 1], [14, 2, 2]])
    lst.write_text("100\t1\tx.png\n")
    with pytest.raises(LabelError, match="fail to find imagelabel for id 101"):
        with ImageRecordIter(path_imglist=str(lst), **kw) as it:
            next(it)
    lst.write_text("100\n")
    with pytest.raises(ImageListError, match="Bad ImageList format"):
        ImageRecordIter(path_imglist=str(lst), **kw)


def test_mean_img_computed_saved_and_reused(tmp_path):
    mean_path = str(tmp_path / "mean.npy")
    kw = dict(BASE, num_parts=3, part_index=0)
    with ImageRecordIter(mean_img=mean_path, **kw) as it:
        a = np.concatenate([b.data[0] for b in it])
    mean = np.load(mean_path)
    assert mean.shape == (3, 32, 32)
    with ImageRecordIter(dtype="uint8", **kw) as it:
        raw = np.concatenate([b.data[0] for b in it]).astype(np.float32)
    np.testing.assert_allclose(mean, raw.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(a, raw - mean, atol=1e-4)
    with ImageRecordIter(mean_img=mean_path, **kw) as it:   # loaded, not recomputed
        np.testing.assert_array_equal(np.concatenate([b.data[0] for b in it]), a)


def test_provide_data_and_databatch_fields():
    with ImageRecordIter(data_name="img", label_name="lbl", **BASE) as it:
        assert it.provide_data[0].name == "img" and it.provide_label[0].name == "lbl"
        assert it.provide_label[0].shape == (8,)
        b = next(it)
        assert b.provide_data == it.provide_data
        assert b.index.dtype == np.int64 and b.index.tolist() == list(range(8))
        assert it.getpad() == 0 and it.getindex().tolist() == list(range(8))


def test_decode_reduce_close_to_exact_and_only_with_resize(tmp_path):
    rec, idx = str(tmp_path / "big.rec"), str(tmp_path / "big.idx")
    yy, xx = np.mgrid[0:600, 0:800]
    img = np.stack([(xx * 255 // 800), (yy * 255 // 600), ((xx + yy) % 256)], -1).astype(np.uint8)
    img = cv2.GaussianBlur(img, (9, 9), 3)
    w = MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, pack_img(IRHeader(0, 0.0, 0, 0), img, quality=95))
    w.close()
    kw = dict(path_imgrec=rec, path_imgidx=idx, data_shape=(3, 96, 96), batch_size=1,
              dtype="uint8")
    with ImageRecordIter(resize=100, **kw) as it:
        exact = next(it).data[0].astype(int)
    with ImageRecordIter(resize=100, decode_reduce=True, **kw) as it:
        assert it._min_side == 100
        fast = next(it).data[0].astype(int)
    assert not np.array_equal(exact, fast)           # decoded at 1/4 scale ...
    assert np.abs(exact - fast).mean() < 2.0         # ... yet nearly the same pixels
    with ImageRecordIter(decode_reduce=True, **kw) as it:  # no resize: crop semantics kept
        assert it._min_side == 0


def test_sixteen_bit_rgba_png_is_scaled_to_8_bits(tmp_path):
    rec, idx = str(tmp_path / "h.rec"), str(tmp_path / "h.idx")
    img = np.zeros((4, 4, 4), np.uint16)
    img[..., 0], img[..., 1], img[..., 2], img[..., 3] = 0, 257 * 100, 65535, 257 * 7
    ok, buf = cv2.imencode(".png", img)
    w = MXIndexedRecordIO(idx, rec, "w")
    w.write_idx(0, pack(IRHeader(0, 0.0, 0, 0), buf.tobytes()))
    w.close()
    with ImageRecordIter(path_imgrec=rec, path_imgidx=idx, data_shape=(4, 4, 4), batch_size=1,
                         dtype="uint8") as it:
        assert next(it).data[0][0][:, 0, 0].tolist() == [255, 100, 0, 7]   # RGBA
