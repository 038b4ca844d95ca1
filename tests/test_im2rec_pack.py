"""im2rec packing against MXNet 1.9.1's packs: byte-identical pass-through,
re-encoded packs equal in headers/labels/count and in decoded pixels within a
tolerance, --num-thread independence, sharding, URLs, failures."""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pytest

from cloudrec import cli
from cloudrec.errors import ImageListError
from cloudrec.format import HEADER_SIZE, parse_idx, unpack
from cloudrec.recordio import MXIndexedRecordIO, MXRecordIO
from cloudrec.tools import im2rec
from cloudrec.tools.packing import PackError

FIX = Path(__file__).parent / "fixtures" / "mxnet"
IMAGES = FIX / "images"
PACK = FIX / "pack"
READS = FIX / "reads" / "records"

# Re-encoding tolerance.  MXNet's packs were encoded by libjpeg(-turbo)/libpng inside
# opencv-python 4.11; another OpenCV build may use another libjpeg version or SIMD path whose
# DCT/colour conversion rounds differently.  Such differences are at most a few levels per pixel
# and tiny on average, so: same shape, max |diff| <= 8, mean |diff| <= 0.5 levels.
# (With opencv-python-headless 5.0.0.93 in this venv the bytes are in fact identical.)
MAX_ABS_DIFF = 8
MEAN_ABS_DIFF = 0.5


def _cmd_flags(folder: str, name: str):
    words = (PACK / folder / f"{name}.cmd").read_text().split()
    assert words[0] == "im2rec.py" and words[-1] == "../../images"
    return words[1:-1]  # flags + prefix


def _run_pack(tmp_path: Path, folder: str, name: str, extra=(), monkeypatch=None):
    """Copy the folder's .lst files into tmp_path and run the fixture's command there."""
    out = tmp_path / folder
    out.mkdir(parents=True, exist_ok=True)
    for lst in (PACK / folder).glob("*.lst"):
        shutil.copy(lst, out / lst.name)
    argv = _cmd_flags(folder, name)
    prefix = argv[-1]
    argv = argv[:-1] + ["--no-progress"] + list(extra) + [str(out / prefix), str(IMAGES)]
    assert im2rec.main(argv) == 0
    return out


PASS_THROUGH = [("passthrough", "all", ["all"]), ("split", "split", ["split_train", "split_val"]),
                ("uniq", "uniq", ["uniq"]), ("multilabel", "ml", ["ml"]),
                ("multilabel_nopack", "ml", ["ml"])]


@pytest.mark.parametrize("folder,name,outputs", PASS_THROUGH, ids=[p[0] for p in PASS_THROUGH])
def test_pass_through_is_byte_identical(folder, name, outputs, tmp_path, capsys):
    out = _run_pack(tmp_path, folder, name)
    stdout = capsys.readouterr().out
    for o in outputs:
        assert (out / f"{o}.rec").read_bytes() == (PACK / folder / f"{o}.rec").read_bytes()
        assert (out / f"{o}.idx").read_bytes() == (PACK / folder / f"{o}.idx").read_bytes()
        assert f"Creating .rec file from {out / o}.lst in {out}\n" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{o}{ext}" for o in outputs for ext in (".lst", ".rec", ".idx"))


def test_multilabel_headers():
    with MXIndexedRecordIO(str(PACK / "multilabel" / "ml.idx"),
                           str(PACK / "multilabel" / "ml.rec"), "r") as r:
        h, _ = unpack(r.read_idx(10))
    assert h.flag == 3 and list(h.label) == [1.0, 10.0, 10.25]


def _records(rec: Path):
    with MXRecordIO(str(rec), "r") as r:
        return [unpack(p) for p in r]


def _decode(img_bytes: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(img_bytes, np.uint8), cv2.IMREAD_UNCHANGED)


REENCODED = [("resize", "all"), ("centercrop_png", "all"), ("gray", "all")]


@pytest.mark.parametrize("folder,name", REENCODED, ids=[r[0] for r in REENCODED])
@pytest.mark.parametrize("threads", [1, 2])
def test_reencoded_pack_matches_mxnet(folder, name, threads, tmp_path):
    out = _run_pack(tmp_path, folder, name, extra=["--num-thread", str(threads)])
    ours, theirs = _records(out / f"{name}.rec"), _records(PACK / folder / f"{name}.rec")
    want = json.loads((READS / f"pack__{folder}__{name}.json").read_text())
    assert len(ours) == len(theirs) == want["num_records"] == 24
    ours_idx = parse_idx((out / f"{name}.idx").read_bytes())
    theirs_idx = parse_idx((PACK / folder / f"{name}.idx").read_bytes())
    assert ours_idx[0].tolist() == theirs_idx[0].tolist()  # same keys in the same order
    for (h, img), (mh, mimg), w in zip(ours, theirs, want["records"]):
        assert tuple(h) == tuple(mh)
        assert (h.flag, h.label, h.id, h.id2) == (w["flag"], w["label"], w["id"], w["id2"])
        a, b = _decode(img), _decode(mimg)
        assert list(a.shape) == w["unpack_img"]["shape"] == list(b.shape)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.max() <= MAX_ABS_DIFF and diff.mean() <= MEAN_ABS_DIFF
    if folder == "centercrop_png":  # PNG is lossless: pixels must be exact
        for (_, img), (_, mimg) in zip(ours, theirs):
            assert np.array_equal(_decode(img), _decode(mimg))


def test_reencoded_header_bytes_match_fixture_json(tmp_path):
    out = _run_pack(tmp_path, "resize", "all")
    want = json.loads((READS / "pack__resize__all.json").read_text())
    with MXRecordIO(str(out / "all.rec"), "r") as r:
        for payload, w in zip(r, want["records"]):
            assert payload[:HEADER_SIZE].hex() == w["header_hex"]


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_num_thread_output_identical(pool, tmp_path):
    """reads/im2rec_num_thread.json: MXNet's --num-thread 2 gave identical bytes; so do we."""
    assert json.loads((FIX / "reads" / "im2rec_num_thread.json").read_text()) == {
        "num_thread_2_identical_to_1": True}
    one = _run_pack(tmp_path / "a", "passthrough", "all", extra=["--num-thread", "1"])
    two = _run_pack(tmp_path / "b", "passthrough", "all", extra=["--num-thread", "3",
                                                                   "--pool", pool])
    for ext in (".rec", ".idx"):
        assert (one / f"all{ext}").read_bytes() == (two / f"all{ext}").read_bytes()
    re1 = _run_pack(tmp_path / "c", "resize", "all")
    re2 = _run_pack(tmp_path / "d", "resize", "all", extra=["--num-thread", "2", "--pool", pool])
    assert (re1 / "all.rec").read_bytes() == (re2 / "all.rec").read_bytes()


# -- sharding ---------------------------------------------------------------------------------------

def _read_shard_set(folder: Path, base: str, n: int):
    payloads, keys = [], []
    for i in range(n):
        stem = folder / ("%s-%05d-of-%05d" % (base, i, n))
        k, offs = parse_idx((stem.with_suffix(".idx")).read_bytes())
        with MXIndexedRecordIO(str(stem.with_suffix(".idx")), str(stem.with_suffix(".rec")),
                               "r") as r:
            got = list(MXRecordIO(str(stem.with_suffix(".rec")), "r"))
            assert [r.read_idx(int(key)) for key in k] == got  # every .idx offset is right
        payloads.append(got)
        keys.extend(k.tolist())
    return payloads, keys


def test_num_shards(tmp_path):
    out = _run_pack(tmp_path, "passthrough", "all", extra=["--num-shards", "5"])
    shards, keys = _read_shard_set(out, "all", 5)
    assert [len(s) for s in shards] == [4, 5, 5, 5, 5]  # i*n//N boundaries
    whole = list(MXRecordIO(str(PACK / "passthrough" / "all.rec"), "r"))
    assert [p for s in shards for p in s] == whole  # same records, same order
    assert keys == parse_idx((PACK / "passthrough" / "all.idx").read_bytes())[0].tolist()
    assert not (out / "all.rec").exists()
    assert len(list(out.iterdir())) == 1 + 10 + 1  # .lst, 5 shards, the manifest
    import json
    doc = json.loads((out / "all.manifest.json").read_text())
    assert [(e["rec"], e["records"], e["size"]) for e in doc["shards"]] == [
        ("all-%05d-of-00005.rec" % i, len(s), (out / ("all-%05d-of-00005.rec" % i)).stat().st_size)
        for i, s in enumerate(shards)]


def test_shard_size(tmp_path):
    limit = 12_000
    out = _run_pack(tmp_path, "passthrough", "all", extra=["--shard-size", str(limit)])
    names = sorted(p.name for p in out.glob("*.rec"))
    n = len(names)
    assert n >= 5 and names[0] == "all-00000-of-%05d.rec" % n
    shards, _ = _read_shard_set(out, "all", n)
    whole = list(MXRecordIO(str(PACK / "passthrough" / "all.rec"), "r"))
    assert [p for s in shards for p in s] == whole
    for name in names:
        size = (out / name).stat().st_size
        assert size <= limit
    # greedy: the first record of each shard would not have fit into the previous one
    for i in range(n - 1):
        size = (out / names[i]).stat().st_size
        nxt = shards[i + 1][0]
        assert size + 8 + ((len(nxt) + 3) & ~3) > limit


def test_shard_size_accepts_units():
    assert im2rec.parse_size("64MB") == 64 << 20
    assert im2rec.parse_size("1.5k") == 1536
    assert im2rec.parse_size("1000") == 1000
    with pytest.raises(Exception):
        im2rec.parse_size("lots")


# -- URLs ---------------------------------------------------------------------------------------------

def test_pack_from_memory_bucket_to_memory_bucket(capsys):
    fs = fsspec.filesystem("memory")
    base = f"/im2rec-pack-{uuid.uuid4().hex[:8]}"
    for p in IMAGES.rglob("*.*"):
        fs.pipe_file(f"{base}/images/{p.relative_to(IMAGES).as_posix()}", p.read_bytes())
    fs.pipe_file(f"{base}/out/all.lst", (PACK / "passthrough" / "all.lst").read_bytes())
    assert cli.main(["im2rec", "--pass-through", "--num-thread", "2", "--no-progress",
                     f"memory://{base}/out/all", f"memory://{base}/images"]) == 0
    assert fs.cat_file(f"{base}/out/all.rec") == (PACK / "passthrough" / "all.rec").read_bytes()
    assert fs.cat_file(f"{base}/out/all.idx") == (PACK / "passthrough" / "all.idx").read_bytes()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{base}/out", detail=False)) == [
        "all.idx", "all.lst", "all.rec"]
    # and a sharded pack to the bucket, read back through the URL API
    assert cli.main(["im2rec", "--pass-through", "--num-shards", "2", "--no-progress",
                     f"memory://{base}/out/all", f"memory://{base}/images"]) == 0
    got = []
    for i in range(2):
        stem = f"memory://{base}/out/all-%05d-of-00002" % i
        with MXRecordIO(stem + ".rec", "r") as r:
            got.extend(r)
    assert got == list(MXRecordIO(str(PACK / "passthrough" / "all.rec"), "r"))


# -- failures ------------------------------------------------------------------------------------------

@pytest.fixture()
def broken_tree(tmp_path):
    """A copy of the images with a truncated JPEG and a text file named .jpg, plus a list."""
    root = tmp_path / "images"
    shutil.copytree(IMAGES, root)
    good = root / "n00000001_flower" / "n00000001_flower_00002.jpg"
    data = good.read_bytes()
    (root / "n00000001_flower" / "zz_truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "n00000000_china" / "zz_fake.jpg").write_text("this is not an image")
    out = tmp_path / "out"
    out.mkdir()
    assert im2rec.main(["--list", "--recursive", "--no-shuffle", str(out / "b"), str(root)]) == 0
    return root, out


def _listdir(p: Path):
    return sorted(x.name for x in p.iterdir())


def test_broken_image_fails_and_leaves_nothing(broken_tree, capsys):
    root, out = broken_tree
    capsys.readouterr()
    for flags in (["--resize", "32"], ["--pass-through"], ["--num-thread", "2"]):
        with pytest.raises(PackError, match="zz_fake.jpg") as ei:
            im2rec.run(_ns(flags + ["--no-progress", str(out / "b"), str(root)]))
        assert "--on-error skip" in str(ei.value)
        assert _listdir(out) == ["b.lst"]  # no .rec/.idx, no temporaries
    assert im2rec.main(["--no-progress", str(out / "b"), str(root)]) == 1
    assert "cannot pack image" in capsys.readouterr().err
    assert _listdir(out) == ["b.lst"]


def _ns(argv):
    p = __import__("argparse").ArgumentParser()
    im2rec.add_arguments(p)
    return p.parse_args(argv)


def test_broken_images_skipped_and_reported(broken_tree, capsys):
    root, out = broken_tree
    assert im2rec.main(["--on-error", "skip", "--num-thread", "2", "--num-shards", "2",
                        "--no-progress", str(out / "b"), str(root)]) == 0
    captured = capsys.readouterr()
    assert "skipped 2" in captured.out
    assert "zz_truncated.jpg" in captured.err and "zz_fake.jpg" in captured.err
    report = (out / "b.errors.tsv").read_text().splitlines()
    assert report[0] == "index\tpath\terror"
    assert sorted(line.split("\t")[1] for line in report[1:]) == [
        "n00000000_china/zz_fake.jpg", "n00000001_flower/zz_truncated.jpg"]
    n = sum(len(list(MXRecordIO(str(out / ("b-%05d-of-00002.rec" % i)), "r"))) for i in range(2))
    assert n == 24


def test_pass_through_packs_truncated_jpeg_unless_decode_checked(broken_tree):
    root, out = broken_tree
    # header check: the cut JPEG still starts like a JPEG, so pass-through keeps it (as MXNet)
    assert im2rec.main(["--pass-through", "--on-error", "skip", "--no-progress",
                        str(out / "b"), str(root)]) == 0
    assert len(list(MXRecordIO(str(out / "b.rec"), "r"))) == 25
    assert im2rec.main(["--pass-through", "--check", "decode", "--on-error", "skip",
                        "--no-progress", str(out / "b"), str(root)]) == 0
    assert len(list(MXRecordIO(str(out / "b.rec"), "r"))) == 24


def test_missing_image_and_bad_lines(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.lst").write_text(
        "0\t0.000000\tn00000000_china/n00000000_china_00000.jpg\n"
        "1\t0.000000\tn00000000_china/does_not_exist.jpg\n"
        "2\tbad\tn00000000_china/n00000000_china_00002.jpg\n")
    with pytest.raises(ImageListError, match=r"x\.lst, line 3"):
        im2rec.run(_ns(["--pass-through", "--no-progress", str(out / "x"), str(IMAGES)]))
    assert _listdir(out) == ["x.lst"]
    assert im2rec.main(["--pass-through", "--on-error", "skip", "--no-progress",
                        str(out / "x"), str(IMAGES)]) == 0
    rows = (out / "x.errors.tsv").read_text().splitlines()[1:]
    assert len(rows) == 2
    assert any("does_not_exist.jpg" in r and "cannot read" in r for r in rows)
    assert any("line 3" in r for r in rows)
    assert len(list(MXRecordIO(str(out / "x.rec"), "r"))) == 1


def test_list_path_escaping_root_is_refused(tmp_path):
    (tmp_path / "secret.jpg").write_bytes((IMAGES / "n00000000_china" /
                                           "n00000000_china_00000.jpg").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "e.lst").write_text("0\t0.000000\t../secret.jpg\n")
    with pytest.raises(ImageListError, match="escapes the image root"):
        im2rec.run(_ns(["--pass-through", "--no-progress", str(out / "e"),
                        str(tmp_path / "out")]))
    with pytest.raises(ImageListError, match="no usable entries"):
        im2rec.run(_ns(["--pass-through", "--on-error", "skip", "--no-progress",
                        str(out / "e"), str(tmp_path / "out")]))
    assert _listdir(out) == ["e.lst"]


def test_no_list_found_and_mixed_label_widths(tmp_path):
    with pytest.raises(ImageListError, match="did not find any .lst"):
        im2rec.run(_ns(["--no-progress", str(tmp_path / "nothing"), str(IMAGES)]))
    (tmp_path / "m.lst").write_text(
        "0\t0.000000\t1.000000\tn00000000_china/n00000000_china_00000.jpg\n"
        "1\t0.000000\tn00000000_china/n00000000_china_00002.jpg\n")
    with pytest.raises(ImageListError, match="different label counts"):
        im2rec.run(_ns(["--pass-through", "--pack-label", "--no-progress", str(tmp_path / "m"),
                        str(IMAGES)]))


# -- progress, interruption, optional dask ------------------------------------------------------------

def test_progress_bar_shows_images_and_megabytes_per_second(tmp_path, capsys):
    _run_pack(tmp_path, "passthrough", "all", extra=["--progress"])
    err = capsys.readouterr().err
    assert "24/24" in err and "img/s" in err and "MB/s" in err


class _InterruptingSource:
    """Wraps an ImageSource; raises KeyboardInterrupt on the n-th read (a user's Ctrl-C)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0

    def url(self, rel):
        return self.inner.url(rel)

    def read(self, rel):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.inner.read(rel)


@pytest.mark.parametrize("threads", [1, 3])
def test_interrupted_run_leaves_no_files(tmp_path, threads):
    from cloudrec.format import parse_lst
    from cloudrec.tools.packing import EncodeOptions, ImageSource, ShardedWriter, pack_entries

    entries = parse_lst((PACK / "passthrough" / "all.lst").read_text())
    writer = ShardedWriter(str(tmp_path), "all", total=24, num_shards=3)
    src = _InterruptingSource(ImageSource(str(IMAGES)), 20)
    with pytest.raises(KeyboardInterrupt):
        pack_entries(entries, src, writer, EncodeOptions(pass_through=True), num_thread=threads,
                     progress=False)
    assert list(tmp_path.iterdir()) == []


def test_too_many_shards_is_an_error(tmp_path, capsys):
    shutil.copy(PACK / "passthrough" / "all.lst", tmp_path / "all.lst")
    assert im2rec.main(["--pass-through", "--num-shards", "25", str(tmp_path / "all"),
                        str(IMAGES)]) == 1
    assert "--num-shards 25 is more than the 24 images" in capsys.readouterr().err
    assert _listdir(tmp_path) == ["all.lst"]


def test_tools_import_without_dask(tmp_path):
    import subprocess
    import sys
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name.split('.')[0] in ('dask', 'distributed'):\n"
            "        raise ImportError('no dask here')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "import cloudrec.tools.im2rec, cloudrec.tools.index, cloudrec.tools.inspect\n"
            "import cloudrec.tools.dask_pack as d\n"
            "from cloudrec.errors import ConfigError\n"
            "try:\n"
            "    d._import_distributed()\n"
            "except ConfigError as e:\n"
            "    print('ok', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok") and "cloudrec[dask]" in out.stdout


def test_dask_engine_local_shard_size_and_missing_plan(tmp_path, capsys):
    limit = 15_000
    out = _run_pack(tmp_path, "passthrough", "all",
                    extra=["--engine", "dask", "--shard-size", str(limit), "--dask-workers", "2"])
    recs = sorted(out.glob("all-*.rec"))
    n = len(recs)
    assert n >= 4 and recs[0].name == "all-00000-of-%05d.rec" % n
    assert all(r.stat().st_size <= limit for r in recs)
    shards, keys = _read_shard_set(out, "all", n)
    assert [p for s in shards for p in s] == list(MXRecordIO(str(PACK / "passthrough" /
                                                                  "all.rec"), "r"))
    shutil.copy(PACK / "passthrough" / "all.lst", tmp_path / "x.lst")
    assert im2rec.main(["--pass-through", "--engine", "dask", "--no-progress",
                        str(tmp_path / "x"), str(IMAGES)]) == 1
    assert "needs --num-shards or --shard-size" in capsys.readouterr().err


def test_decompression_bomb_header_is_refused_before_decoding():
    import struct
    import zlib
    from cloudrec.errors import ImageDecodeError
    from cloudrec.format.lst import ListEntry
    from cloudrec.tools.packing import EncodeOptions, build_payload

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    with pytest.raises(ImageDecodeError, match="60000x60000"):
        build_payload(ListEntry(0, (0.0,), "bomb.png"), png, EncodeOptions(resize=32))
    # pass-through never decodes, so the file is packed as it is (as MXNet would)
    assert build_payload(ListEntry(0, (0.0,), "bomb.png"), png,
                         EncodeOptions(pass_through=True)).endswith(png)
