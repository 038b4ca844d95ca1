"""Every .rec/.idx written by the real MXNet 1.9.1 reads back as MXNet read it,
and writing the same records again gives byte-identical files."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cloudrec import recordio
from cloudrec.errors import ImageDecodeError
from cloudrec.format import unpack

FIX = Path(__file__).parent / "fixtures" / "mxnet"
READS = sorted((FIX / "reads" / "records").glob("*.json"))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _expected(path: Path) -> dict:
    return json.loads(path.read_text())


def _label_matches(got, want) -> bool:
    if isinstance(want, list):
        return list(np.asarray(got, dtype=np.float32)) == [np.float32(_num(w)) for w in want]
    want = _num(want)
    if math.isnan(want):
        return math.isnan(got)
    return np.float32(got) == np.float32(want)


def _num(v):
    return float(v) if isinstance(v, str) else v


@pytest.fixture(params=READS, ids=[p.stem for p in READS])
def expected(request) -> dict:
    return _expected(request.param)


def test_fixture_set_is_complete():
    assert len(READS) == 18
    assert len(WITH_IDX) == 17  # all but api/raw.rec


def test_sequential_read_matches_mxnet(expected):
    rec = FIX / expected["file"]
    assert sha(rec.read_bytes()) == expected["file_sha256"]
    with recordio.MXRecordIO(str(rec), "r") as r:
        got = list(r)
    assert len(got) == expected["num_records"]
    for payload, want in zip(got, expected["records"]):
        assert len(payload) == want["length"]
        assert sha(payload) == want["sha256"]
        if "hex" in want:
            assert payload.hex() == want["hex"]
        if "flag" not in want:
            continue
        header, img = unpack(payload)
        assert payload[:24].hex() == want["header_hex"]
        assert (header.flag, header.id, header.id2) == (want["flag"], want["id"], want["id2"])
        assert _label_matches(header.label, want["label"])
        assert len(img) == want["payload_length"]
        assert sha(img) == want["payload_sha256"]


WITH_IDX = [p for p in READS if "idx" in _expected(p)]


@pytest.mark.parametrize("path", WITH_IDX, ids=[p.stem for p in WITH_IDX])
def test_indexed_read_matches_mxnet(path):
    expected = _expected(path)
    rec = FIX / expected["file"]
    idx = FIX / expected["idx_file"]
    key_type = str if "strkeys" in expected["file"] else int
    with recordio.MXIndexedRecordIO(str(idx), str(rec), "r", key_type=key_type) as r:
        assert [[k, r.idx[k]] for k in r.keys] == [[key_type(k), o] for k, o in expected["idx"]]
        for key, want in reversed(expected["read_idx_sha256"]):
            assert sha(r.read_idx(key_type(key))) == want


def test_rewrite_is_byte_identical(expected, tmp_path):
    rec = FIX / expected["file"]
    with recordio.MXRecordIO(str(rec), "r") as r:
        payloads = list(r)
    out_rec = tmp_path / "out.rec"
    if "idx" not in expected:
        with recordio.MXRecordIO(str(out_rec), "w") as w:
            for p in payloads:
                w.write(p)
        assert out_rec.read_bytes() == rec.read_bytes()
        return
    key_type = str if "strkeys" in expected["file"] else int
    out_idx = tmp_path / "out.idx"
    # records were written in .idx line order by MXNet; offsets tell which payload is which
    offsets = [o for _, o in expected["idx"]]
    by_offset = dict(zip(sorted(set(offsets)), payloads))
    with recordio.MXIndexedRecordIO(str(out_idx), str(out_rec), "w", key_type=key_type) as w:
        for key, off in expected["idx"]:
            w.write_idx(key_type(key), by_offset[off])
    if len(set(offsets)) == len(payloads) and offsets == sorted(offsets):
        assert out_rec.read_bytes() == rec.read_bytes()
        assert out_idx.read_bytes() == (FIX / expected["idx_file"]).read_bytes()


def test_unpack_img_decodes_like_mxnet_or_raises(expected):
    if "flag" not in expected["records"][0]:
        return
    rec = FIX / expected["file"]
    with recordio.MXRecordIO(str(rec), "r") as r:
        for payload, want in zip(r, expected["records"]):
            if want["unpack_img"] is None or "error" in want["unpack_img"]:
                with pytest.raises(ImageDecodeError):
                    recordio.unpack_img(payload)
                continue
            header, img = recordio.unpack_img(payload)
            assert list(img.shape) == want["unpack_img"]["shape"]
            # same libjpeg-turbo/libpng family as MXNet's python cv2: identical pixels
            assert sha(np.ascontiguousarray(img).tobytes()) == want["unpack_img"]["sha256"]
            assert header.id == want["id"]
