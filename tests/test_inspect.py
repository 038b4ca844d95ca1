"""`cloudrec inspect`: counts, label histogram, image sizes and the contact sheet,
checked against the fixture images' manifest."""
from __future__ import annotations

import csv
import json
import shutil
import uuid
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pytest

from cloudrec import cli
from cloudrec.errors import ConfigError
from cloudrec.tools import im2rec
from cloudrec.tools.inspect import contact_sheet, inspect, parse_aug, sample_ids

FIX = Path(__file__).parent / "fixtures" / "mxnet"
PASS = FIX / "pack" / "passthrough" / "all.rec"


def _manifest():
    with open(FIX / "images" / "manifest.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_full_sample_matches_manifest():
    rows = _manifest()
    s = inspect(str(PASS), sample=0)
    assert (s.shards, s.records, s.sampled, s.bytes) == (1, 24, 24, PASS.stat().st_size)
    assert s.label_histogram == {"0": 8, "1": 8, "2": 8}
    ws = [int(r["width"]) for r in rows]
    hs = [int(r["height"]) for r in rows]
    assert (s.width.min, s.width.max) == (min(ws), max(ws))
    assert (s.height.min, s.height.max) == (min(hs), max(hs))
    assert s.width.mean == pytest.approx(np.mean(ws), abs=1e-3)
    assert s.formats == {"jpeg": 23, "png": 1}
    assert s.payload_bytes.max == max(int(r["bytes"]) for r in rows)
    assert s.errors == [] and s.label_widths == {"1": 24}


def test_sample_is_seeded_subset():
    a = sample_ids(1000, 50, seed=3)
    assert len(a) == 50 and len(set(a.tolist())) == 50 and list(a) == sorted(a)
    assert np.array_equal(a, sample_ids(1000, 50, seed=3))
    assert not np.array_equal(a, sample_ids(1000, 50, seed=4))
    s = inspect(str(PASS), sample=10, seed=1)
    assert s.sampled == 10 and sum(s.label_histogram.values()) == 10 and s.records == 24


def test_multilabel_and_broken_records():
    s = inspect(str(FIX / "pack" / "multilabel" / "ml.rec"), sample=0)
    assert s.label_widths == {"3": 24} and s.label_histogram == {"0": 8, "1": 8, "2": 8}
    s = inspect(str(FIX / "api" / "garbage.rec"), sample=0)
    assert len(s.errors) == 1 and "garbage.rec" in s.errors[0]
    assert "offset 2468" in s.errors[0] and "not an image" in s.errors[0]
    assert s.formats == {"jpeg": 3, "unknown": 1}


def test_shards_glob_without_idx(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIX / "pack" / "passthrough" / "all.lst", out / "all.lst")
    assert im2rec.main(["--pass-through", "--num-shards", "3", "--no-progress", str(out / "all"),
                        str(FIX / "images")]) == 0
    (out / "all-00001-of-00003.idx").unlink()  # one shard without index: scanned
    s = inspect(str(out / "all-*.rec"), sample=0)
    assert s.shards == 3 and s.records == 24 and s.shard_records == [8, 8, 8]
    assert s.label_histogram == {"0": 8, "1": 8, "2": 8}


def test_grid_png_has_cells_and_labels(tmp_path, capsys):
    png = tmp_path / "sheet.png"
    assert cli.main(["inspect", str(PASS), "--grid", str(png), "--grid-n", "10", "--cell", "48",
                     "--cols", "4"]) == 0
    out = capsys.readouterr().out
    assert "records: 24" in out and f"contact sheet: {png}" in out
    img = cv2.imread(str(png))
    # 3 rows x 4 columns of 48 px cells with 2 px gaps
    assert img.shape == (3 * 50 + 2, 4 * 50 + 2, 3)
    cells = [img[2 + r * 50:2 + r * 50 + 48, 2 + c * 50:2 + c * 50 + 48]
             for r in range(3) for c in range(4)]
    assert all(c.std() > 5 for c in cells[:10])  # real pictures
    assert all((c == 40).all() for c in cells[10:])  # empty slots keep the background
    # the caption: white text on a black box at the bottom-left of each cell
    for c in cells[:10]:
        box = c[38:, :8]
        assert (box.max(axis=2) == 0).sum() >= 10 and (box.min(axis=2) > 200).sum() >= 3


def test_grid_augmentation_is_seeded(tmp_path):
    a, b, c = (tmp_path / f"{n}.png" for n in "abc")
    kw = dict(sample=0, grid_n=8, cell=40)
    inspect(str(PASS), grid=str(a), **kw)
    aug = parse_aug("rand_crop=1,rand_mirror=1,brightness=0.5")
    assert aug == {"rand_crop": 1, "rand_mirror": 1, "brightness": 0.5}
    inspect(str(PASS), grid=str(b), aug=aug, seed=5, **kw)
    inspect(str(PASS), grid=str(c), aug=aug, seed=5, **kw)
    assert b.read_bytes() == c.read_bytes()
    assert a.read_bytes() != b.read_bytes()
    with pytest.raises(ConfigError):
        parse_aug("mean=1")
    with pytest.raises(ConfigError):
        parse_aug("rand_crop")


def test_contact_sheet_layout():
    items = [(str(i), np.full((20 + i, 30, 3), 200, np.uint8)) for i in range(5)]
    sheet = contact_sheet(items, cell=32, cols=3)
    assert sheet.shape == (2 * 34 + 2, 3 * 34 + 2, 3)


def test_json_and_memory_url(capsys):
    fs = fsspec.filesystem("memory")
    base = f"/inspect-{uuid.uuid4().hex[:8]}"
    fs.pipe_file(f"{base}/all.rec", PASS.read_bytes())
    fs.pipe_file(f"{base}/all.idx", PASS.with_suffix(".idx").read_bytes())
    assert cli.main(["inspect", "--json", f"memory://{base}/all.rec", "--grid",
                     f"memory://{base}/g.png"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["records"] == 24 and d["label_histogram"] == {"0": 8, "1": 8, "2": 8}
    assert fs.cat_file(f"{base}/g.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_draws_detection_boxes(tmp_path):
    """Detection records get their boxes drawn on the contact sheet, where the objects are."""
    from cloudrec.format.irheader import pack
    from cloudrec.image.det_labels import make_det_label
    from cloudrec.recordio import MXIndexedRecordIO
    from cloudrec.tools.inspect import grid_images

    img = np.full((60, 80, 3), 128, np.uint8)  # plain gray: any coloured pixel is a box edge
    ok, png = cv2.imencode(".png", img)
    objects = np.array([[1, 0.25, 0.25, 0.75, 0.75], [0, 0.0, 0.0, 0.5, 0.5]], np.float32)
    rec, idx = str(tmp_path / "det.rec"), str(tmp_path / "det.idx")
    with MXIndexedRecordIO(idx, rec, "w") as w:
        w.write_idx(0, pack((0, make_det_label(objects), 0, 0), png.tobytes()))
    (caption, out), = grid_images(_payloads(rec, idx), 1, 96, {}, 0)
    assert caption.startswith("2 obj")
    changed = np.any(out != 128, axis=2)
    assert changed[15, 20:61].all() and changed[45, 20:61].all()   # top/bottom edge of box 1
    assert not changed[35, 45:56].any()                             # inside stays untouched


def _payloads(rec, idx):
    from cloudrec.recordio import MXIndexedRecordIO
    with MXIndexedRecordIO(idx, rec, "r") as r:
        return [(k, r.read_idx(k)) for k in r.keys]
