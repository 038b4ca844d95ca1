"""MXNet's NDArray file format (cloudrec.format.ndarray) and ImageRecordIter's mean_img files.

Every fixture under fixtures/mxnet/ndarray/ was written by the real MXNet 1.9.1;
expected.json is what its ``mx.nd.load`` returned.  cloudrec must read the same
values and write the same bytes.
"""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cloudrec.errors import ConfigError
from cloudrec.format import ndarray as F
from cloudrec.iterators import ImageRecordIter
from cloudrec.iterators.mean_image import decode_mean_image, load_mean_image

FIX = Path(__file__).parent / "fixtures" / "mxnet"
ND = FIX / "ndarray"
EXPECTED = json.loads((ND / "expected.json").read_text())
UNIQ = str(FIX / "pack" / "uniq" / "uniq.rec")


def _expected_array(spec):
    dtype = spec["dtype"].replace("<class 'numpy.", "").rstrip("'>")
    return np.array(spec["values"], dtype=dtype).reshape(spec["shape"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reads_mxnet_files_to_mxnet_values(name):
    data = (ND / name).read_bytes()
    got = F.loads(data, name)
    exp = EXPECTED[name]
    if isinstance(exp, dict):
        assert isinstance(got, dict) and list(got) == list(exp)
        pairs = [(got[k], exp[k]) for k in exp]
    else:
        assert isinstance(got, list) and len(got) == len(exp)
        pairs = list(zip(got, exp))
    for arr, spec in pairs:
        want = _expected_array(spec)
        assert arr.dtype == want.dtype and arr.shape == want.shape
        assert np.array_equal(arr, want)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_writes_mxnet_files_byte_identical(name):
    data = (ND / name).read_bytes()
    assert F.dumps(F.loads(data)) == data


def test_single_array_and_dict_layout():
    one = F.dumps(np.arange(10, dtype=np.uint8))
    assert one == (ND / "single.nd").read_bytes()
    magic, reserved, count = struct.unpack_from("<QQQ", one)
    assert (magic, reserved, count) == (0x112, 0, 1)
    assert struct.unpack_from("<Ii", one, 24) == (F.V2_MAGIC, 0)
    d = F.loads(F.dumps({"a": np.float64([1.5]), "bé": np.zeros((2, 0, 3), np.int8)}))
    assert list(d) == ["a", "bé"] and d["bé"].shape == (2, 0, 3) and d["a"][0] == 1.5


def test_zero_d_array_round_trips_as_v3():
    data = F.dumps([np.float32(3.25).reshape(())])
    assert struct.unpack_from("<I", data, 24)[0] == F.V3_MAGIC
    (arr,) = F.loads(data)
    assert arr.shape == () and arr == np.float32(3.25)


def test_reads_v1_and_pre_v1_arrays():
    payload = np.arange(6, dtype=np.int32).tobytes()
    v1 = (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<II2q", F.V1_MAGIC, 2, 2, 3)
          + struct.pack("<iii", 1, 0, 4) + payload + struct.pack("<Q", 0))
    legacy = (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<I2I", 2, 2, 3)
              + struct.pack("<iii", 2, 1, 4) + payload + struct.pack("<Q", 0))  # gpu(1) context
    for data in (v1, legacy):
        (arr,) = F.loads(data)
        assert arr.dtype == np.int32 and np.array_equal(arr, np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-3], "unexpected bytes|truncated"),
    (lambda b: b[:40], "truncated"),
    (lambda b: b"\x00" * 8 + b[8:], "no list magic"),
    (lambda b: b + b"\x00", "unexpected bytes"),
    (lambda b: b[:24] + struct.pack("<Ii", F.V2_MAGIC, 2) + b[32:], "sparse NDArray \\(csr\\)"),
    (lambda b: b[:52] + struct.pack("<i", 12) + b[56:], "bfloat16"),
    (lambda b: b[:24] + b"\xff\xff\xff\x7f" + b[28:], "bad array magic"),
])
def test_corrupt_files_raise_naming_the_file(mutate, message):
    data = mutate((ND / "single.nd").read_bytes())
    with pytest.raises(F.NDArrayFormatError, match=message) as ei:
        F.loads(data, "s3://b/single.nd")
    assert "s3://b/single.nd" in str(ei.value)


def test_unsupported_dtype_and_bad_keys_are_errors():
    with pytest.raises(F.NDArrayFormatError, match="complex64"):
        F.dumps([np.zeros(2, np.complex64)])
    with pytest.raises(ValueError, match="keys must be str"):
        F.dumps({1: np.zeros(2)})


# ------------------------------------------------------------------------------ mean_img
def test_image_record_iter_reads_mxnet_mean_file():
    ref = F.loads((ND / "uniq_mean_3x32x32.bin").read_bytes())["mean_img"]
    with ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), resize=36, batch_size=6,
                         mean_img=str(ND / "uniq_mean_3x32x32.bin")) as it, \
            ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), resize=36,
                            batch_size=6) as plain:
        got, raw = it.next().data[0], plain.next().data[0]
    assert np.allclose(got, raw - ref[None], atol=1e-4)


@pytest.mark.parametrize("name", ["mean.bin", "mean.npy", "mean_img"])
def test_computed_mean_equals_mxnet_and_format_follows_name(tmp_path, name):
    ref_bytes = (ND / "uniq_mean_3x32x32.bin").read_bytes()
    path = tmp_path / name
    with ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), resize=36, batch_size=6,
                         mean_img=str(path)):
        pass
    data = path.read_bytes()
    if name.endswith(".npy"):
        assert data.startswith(b"\x93NUMPY")
        assert np.array_equal(np.load(path), F.loads(ref_bytes)["mean_img"])
    else:  # MXNet's format, byte for byte what MXNet 1.9.1 wrote for the same data
        assert data == ref_bytes


def test_mean_file_written_to_s3_and_read_back(s3_server):
    bucket = s3_server.new_bucket()
    url = f"{bucket}/stats/mean.bin"
    so = s3_server.storage_options
    with ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), resize=36, batch_size=6,
                         mean_img=url, storage_options=so):
        pass
    got = load_mean_image(url, (3, 32, 32), so)
    assert np.array_equal(got, F.loads((ND / "uniq_mean_3x32x32.bin").read_bytes())["mean_img"])


COLOUR_AUGS = [dict(brightness=0.4), dict(contrast=0.4), dict(saturation=0.4),
               dict(random_h=20), dict(random_s=20), dict(random_l=20), dict(pca_noise=0.1),
               dict(random_resized_crop=True, min_random_area=0.3),
               dict(rand_crop=True), dict(max_rotate_angle=15), dict(max_shear_ratio=0.2),
               dict(max_random_scale=1.2, min_random_scale=0.8),
               dict(max_aspect_ratio=0.3), dict(inter_method=10)]


@pytest.mark.parametrize("kw", COLOUR_AUGS, ids=lambda kw: "-".join(kw))
def test_not_yet_existing_mean_with_random_augmenter(tmp_path, kw):
    """Used to raise AttributeError ('NoneType' has no 'random'); MXNet computes, saves,
    iterates.  The mean pass draws from seeded per-record generators: reproducible."""
    means = []
    for run in range(2):
        path = tmp_path / f"mean{run}.bin"
        with ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), resize=36, batch_size=6,
                             mean_img=str(path), seed=3, **kw) as it:
            batches = list(it)
        assert len(batches) == 4 and batches[0].data[0].shape == (6, 3, 32, 32)
        means.append(path.read_bytes())
    assert means[0] == means[1]
    mean = decode_mean_image(means[0], "m")
    assert mean.shape == (3, 32, 32) and mean.dtype == np.float32
    assert 30 < float(mean.mean()) < 220  # a mean of real photos, not zeros


def test_bad_mean_files_are_config_errors(tmp_path):
    wrong_shape = tmp_path / "w.bin"
    wrong_shape.write_bytes(F.dumps({"mean_img": np.zeros((3, 8, 8), np.float32)}))
    two = tmp_path / "two.bin"
    two.write_bytes(F.dumps({"a": np.zeros(1), "b": np.zeros(1)}))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not an array")
    for path, msg in ((wrong_shape, "shape"), (two, "none named 'mean_img'"),
                      (junk, "neither MXNet's NDArray format nor .npy")):
        with pytest.raises(ConfigError, match=msg) as ei:
            ImageRecordIter(path_imgrec=UNIQ, data_shape=(3, 32, 32), resize=36, batch_size=6,
                            mean_img=str(path))
        assert str(path) in str(ei.value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_random_corruption_is_a_format_error_never_a_crash(name):
    """3,000 seeded mutations (byte flips in the headers, truncations): each file either
    still parses or raises NDArrayFormatError; no other exception, no huge allocation."""
    data = (ND / name).read_bytes()
    rng = np.random.default_rng(0)
    parsed = failed = 0
    for _ in range(3000):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, min(len(b), 400)))] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            b = b[:int(rng.integers(0, len(b)))]
        try:
            F.loads(bytes(b))
            parsed += 1
        except F.NDArrayFormatError:
            failed += 1
    assert parsed + failed == 3000 and failed > 0
