"""imdecode/imread: MXNet's pixels, flags and errors, EXIF rules and the decompression-bomb guard."""
import hashlib
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudrec.errors import ImageDecodeError, ImageTooLargeError
from cloudrec.image import decode as D
from cloudrec.image import image_size, imdecode, imread
from cloudrec.recordio import MXIndexedRecordIO, unpack

FIX = Path(__file__).parent / "fixtures" / "mxnet"


def _records(name):
    """(record json, image payload) for every record of a fixture .rec, in idx order."""
    meta = json.loads((FIX / "reads" / "records" / f"{name.replace('/', '__')}.json").read_text())
    r = MXIndexedRecordIO(str(FIX / f"{name}.idx"), str(FIX / f"{name}.rec"), "r")
    by_id = {rec["id"]: rec for rec in meta["records"]}
    out = []
    for key in r.keys:
        header, payload = unpack(r.read_idx(key))
        out.append((by_id[header.id], payload))
    r.close()
    return out


@pytest.mark.parametrize("name", ["pack/passthrough/all", "pack/gray/all", "pack/resize/all",
                                  "pack/centercrop_png/all", "api/pack_img",
                                  "api/multipart_img"])
def test_pixels_equal_mxnet_imdecode(name):
    # sha256 of MXNet's RGB pixels (libmxnet's OpenCV) for every record
    n = 0
    for meta, payload in _records(name):
        want = meta["mx_imdecode"]
        img = imdecode(payload)
        assert img.dtype == np.uint8 and list(img.shape) == want["shape"]
        assert hashlib.sha256(img.tobytes()).hexdigest() == want["sha256"], meta["id"]
        n += 1
    assert n > 0


def test_flags_and_channel_order():
    meta, payload = _records("pack/passthrough/all")[0]
    rgb = imdecode(payload)
    bgr = imdecode(payload, to_rgb=False)
    assert np.array_equal(rgb, bgr[:, :, ::-1])
    gray = imdecode(payload, flag=0)
    assert gray.shape == rgb.shape[:2] + (1,)
    assert np.array_equal(gray[:, :, 0], cv2.imdecode(np.frombuffer(payload, np.uint8), 0))
    assert imdecode(payload, flag=7).shape == rgb.shape  # any flag != 0 is colour
    out = np.zeros_like(rgb)
    assert imdecode(payload, out=out) is out and np.array_equal(out, rgb)
    # bytearray and ndarray input
    assert np.array_equal(imdecode(bytearray(payload)), rgb)
    assert np.array_equal(imdecode(np.frombuffer(payload, np.uint8)), rgb)
    with pytest.raises(ValueError):
        imdecode(payload, flag=-1)
    with pytest.raises(ValueError):
        imdecode("not bytes")


def test_gray_jpeg_decodes_to_three_equal_channels():
    gray_src = np.arange(24 * 30, dtype=np.uint8).reshape(24, 30)
    buf = cv2.imencode(".png", gray_src)[1].tobytes()
    img = imdecode(buf)
    assert img.shape == (24, 30, 3)
    assert np.array_equal(img[:, :, 0], gray_src) and np.array_equal(img[:, :, 2], gray_src)
    assert np.array_equal(imdecode(buf, 0)[:, :, 0], gray_src)


def test_png_with_alpha_drops_alpha():
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 10  # B
    rgba[..., 2] = 200  # R
    rgba[..., 3] = 7
    img = imdecode(cv2.imencode(".png", rgba)[1].tobytes())
    assert img.shape == (5, 6, 3) and (img[..., 0] == 200).all() and (img[..., 2] == 10).all()


def test_broken_inputs_raise_decode_error_naming_the_record():
    with pytest.raises(ImageDecodeError, match="empty"):
        imdecode(b"", url="s3://b/x.rec", key=3)
    with pytest.raises(ImageDecodeError) as e:
        imdecode(b"this is not an image", url="s3://b/x.rec", key=1)
    assert "s3://b/x.rec" in str(e.value) and "key 1" in str(e.value) and e.value.key == 1
    (meta, payload), = [x for x in _records("api/truncated") if x[0]["id"] == 1]
    with pytest.raises(ImageDecodeError):
        imdecode(payload, key=1)  # cut JPEG: an error, never half an image


def test_truncated_jpeg_as_mxnet_matches_libmxnet_pixels():
    n = 0
    for meta, payload in _records("api/truncated"):
        img = imdecode(payload, truncated="mxnet")
        assert hashlib.sha256(img.tobytes()).hexdigest() == meta["mx_imdecode"]["sha256"]
        n += 1
    assert n == 4


@pytest.mark.parametrize("gray,subsample", [(False, True), (False, False), (True, True)])
def test_truncated_jpeg_rebuild_is_consistent(gray, subsample):
    rng = np.random.default_rng(5)
    src = cv2.GaussianBlur(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8), (5, 5), 0)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    if not subsample:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    full_bytes = cv2.imencode(".jpg", src, params)[1].tobytes()
    flag = 0 if gray else 1
    full = imdecode(full_bytes, flag)
    sos = full_bytes.index(b"\xff\xda")
    for frac in (0.3, 0.6, 0.9):
        cut = full_bytes[:sos + int((len(full_bytes) - sos) * frac)]
        with pytest.raises(ImageDecodeError):
            imdecode(cut, flag)
        img = imdecode(cut, flag, truncated="mxnet")
        assert img.shape == full.shape
        rows = int(np.argmax((img != full).reshape(img.shape[0], -1).any(axis=1)))
        assert 0 < rows < img.shape[0]
        assert np.array_equal(img[:rows], full[:rows])  # decoded rows are the real ones
        assert (img[rows:] == img[rows - 1]).all()  # below: the last row, repeated
    with pytest.raises(ImageDecodeError):  # cut inside the headers: nothing to rebuild
        imdecode(full_bytes[:sos], flag, truncated="mxnet")


def _png(w, h, idat=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_with_size(w, h):
    buf = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    pos = 2
    while buf[pos + 1] != 0xC0:
        pos += 2 + struct.unpack_from(">H", buf, pos + 2)[0]
    struct.pack_into(">HH", buf, pos + 5, h, w)
    return bytes(buf)


def test_image_size_reads_headers_of_every_format():
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        assert image_size(cv2.imencode(ext, img)[1].tobytes()) == (53, 37), ext
    assert image_size(_png(70000, 3)) == (70000, 3)
    assert image_size(_jpeg_with_size(40000, 50000)) == (40000, 50000)
    assert image_size(b"GIF89a" + struct.pack("<HH", 640, 480) + b"\0" * 8) == (640, 480)
    assert image_size(b"garbage bytes here") is None


def test_bomb_is_refused_before_decoding(monkeypatch):
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(D.cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    for bomb in (_png(50000, 50000, zlib.compress(b"\0" * 1000)), _jpeg_with_size(60000, 60000)):
        with pytest.raises(ImageTooLargeError) as e:
            imdecode(bomb, url="mem://x.rec", key=9)
        assert "60000" in str(e.value) or "50000" in str(e.value)
        assert "key 9" in str(e.value)
    assert calls == []  # the decoder never ran
    # the limit is settable per call and process-wide
    small = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageTooLargeError):
        imdecode(small, max_pixels=399)
    assert imdecode(small, max_pixels=400).shape == (20, 20, 3)
    old = D.get_max_pixels()
    try:
        D.set_max_pixels(100)
        with pytest.raises(ImageTooLargeError):
            imdecode(small)
        D.set_max_pixels(None)  # disabled
        assert imdecode(small).shape == (20, 20, 3)
    finally:
        D.set_max_pixels(old)
    assert isinstance(ImageTooLargeError("x"), ImageDecodeError)


def _exif_app1(orientation):
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0"
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def test_exif_orientation_rule_of_mxnet():
    src = np.zeros((10, 30, 3), np.uint8)
    src[:, :5] = 255
    jfif = cv2.imencode(".jpg", src)[1].tobytes()
    assert jfif[2:4] == b"\xff\xe0"
    app0_len = struct.unpack(">H", jfif[4:6])[0]
    exif_first = jfif[:2] + _exif_app1(6) + jfif[2:]  # FF E1 first: orientation honoured
    jfif_then_exif = jfif[:4 + app0_len] + _exif_app1(6) + jfif[4 + app0_len:]  # JFIF: ignored
    assert imdecode(exif_first).shape == (30, 10, 3)
    assert imdecode(jfif_then_exif).shape == (10, 30, 3)


def test_imread(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (9, 11, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), img)
    assert np.array_equal(imread(str(p)), img[:, :, ::-1])
    assert np.array_equal(imread(str(p), to_rgb=False), img)
    assert imread(str(p), 0).shape == (9, 11, 1)
    with pytest.raises(FileNotFoundError, match="couldn't open"):
        imread(str(tmp_path / "missing.jpg"))
