"""`im2rec --list` makes the same `.lst` bytes and prints the same folder lines as
MXNet 1.9.1's tools/im2rec.py, for every flag combination in the fixtures, on
local disk and on memory:// URLs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pytest

from cloudrec import cli
from cloudrec.errors import ImageListError
from cloudrec.format import parse_lst
from cloudrec.tools import im2rec, listing

FIX = Path(__file__).parent / "fixtures" / "mxnet"
IMAGES = FIX / "images"
LISTS = FIX / "im2rec"

# (prefix, argv run inside im2rec/ with root ../images, produced files) -- from the README
CASES = [
    ("all", ["--list", "--recursive", "all", "{root}"], ["all.lst"]),
    ("noshuffle", ["--list", "--recursive", "--no-shuffle", "noshuffle", "{root}"],
     ["noshuffle.lst"]),
    ("split", ["--list", "--recursive", "--train-ratio", "0.75", "split", "{root}"],
     ["split_train.lst", "split_val.lst"]),
    ("chunks", ["--list", "--recursive", "--no-shuffle", "--chunks", "2", "--train-ratio", "0.5",
                "--test-ratio", "0.25", "chunks", "{root}"],
     [f"chunks_{i}_{s}.lst" for i in (0, 1) for s in ("train", "val", "test")]),
    ("pngonly", ["pngonly", "{root}", "--list", "--recursive", "--exts", ".png"],
     ["pngonly.lst"]),
    ("flat", ["--list", "flat", "{root}/n00000001_flower"], ["flat.lst"]),
]


def _argv(argv, root):
    return [a.replace("{root}", root) for a in argv]


@pytest.mark.parametrize("name,argv,files", CASES, ids=[c[0] for c in CASES])
def test_list_matches_mxnet_local(name, argv, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rel_root = os.path.relpath(IMAGES, tmp_path)  # relative ROOT, as MXNet was run
    assert im2rec.main(_argv(argv, rel_root)) == 0
    out = capsys.readouterr().out
    assert out == (LISTS / f"{name}.stdout").read_text()
    produced = sorted(p.name for p in tmp_path.iterdir())
    assert produced == sorted(files)  # nothing else: no temporaries left behind
    for f in files:
        assert (tmp_path / f).read_bytes() == (LISTS / f).read_bytes(), f


def _copy_to_memory(prefix: str) -> str:
    fs = fsspec.filesystem("memory")
    for p in IMAGES.rglob("*"):
        if p.is_file():
            fs.pipe_file(f"{prefix}/{p.relative_to(IMAGES).as_posix()}", p.read_bytes())
    return f"memory://{prefix}"


@pytest.mark.parametrize("name,argv,files", CASES, ids=[c[0] for c in CASES])
def test_list_matches_mxnet_memory_urls(name, argv, files, capsys):
    base = f"/im2rec-list-{uuid.uuid4().hex[:8]}"
    root = _copy_to_memory(base + "/images")
    argv = _argv(argv, root)
    argv[argv.index(name)] = f"memory://{base}/out/{name}"
    assert cli.main(["im2rec"] + argv) == 0
    assert capsys.readouterr().out == (LISTS / f"{name}.stdout").read_text()
    fs = fsspec.filesystem("memory")
    assert sorted(os.path.basename(p) for p in fs.ls(f"{base}/out", detail=False)) == sorted(files)
    for f in files:
        assert fs.cat_file(f"{base}/out/{f}") == (LISTS / f).read_bytes(), f


def test_split_sizes_and_labels_follow_folders():
    entries = parse_lst((LISTS / "noshuffle.lst").read_text())
    assert [e.index for e in entries] == list(range(24))
    for e in entries:
        assert e.labels[0] == float(int(e.path.split("/")[0][1:9]))  # n0000000K_* -> K
    train = parse_lst((LISTS / "split_train.lst").read_text())
    val = parse_lst((LISTS / "split_val.lst").read_text())
    assert (len(train), len(val)) == (18, 6)


def test_shuffle_is_mxnet_seeded_permutation():
    walk = parse_lst((LISTS / "noshuffle.lst").read_text())
    shuffled = listing.shuffle_entries(walk)
    assert listing.format_list(shuffled) == (LISTS / "all.lst").read_text()
    assert listing.shuffle_entries(walk) == shuffled  # deterministic
    assert listing.shuffle_entries(walk, seed=1) != shuffled


def test_split_lists_uses_nominal_chunk_size():
    entries = [listing.ListEntry(i, (0.0,), f"{i}.jpg") for i in range(10)]
    parts = dict(listing.split_lists(entries, chunks=3, train_ratio=0.5, test_ratio=0.25))
    # chunk_size = 4 -> sep = 2, sep_test = 1, the last chunk has only 2 entries
    assert [e.index for e in parts["_0_test"]] == [0]
    assert [e.index for e in parts["_0_train"]] == [1, 2]
    assert [e.index for e in parts["_0_val"]] == [3]
    assert [e.index for e in parts["_2_test"]] == [8]
    assert [e.index for e in parts["_2_train"]] == [9]
    assert parts["_2_val"] == []


def test_uppercase_suffix_matches_but_uppercase_ext_flag_does_not(tmp_path, monkeypatch, capsys):
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    shutil.copy(IMAGES / "n00000000_china" / "n00000000_china_00000.jpg", root / "X.JPG")
    (root / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    assert im2rec.main(["--list", "--recursive", "--no-shuffle", "l", "imgs"]) == 0
    assert (tmp_path / "l.lst").read_text() == "0\t0.000000\ta/X.JPG\n"
    assert capsys.readouterr().out == "a 0\n"
    # MXNet compares the lower-cased suffix with --exts as given: '.JPG' never matches
    assert im2rec.main(["--list", "--recursive", "u", "imgs", "--exts", ".JPG"]) == 1
    assert not (tmp_path / "u.lst").exists()


def test_root_with_images_is_labelled_dot(tmp_path, monkeypatch, capsys):
    src = IMAGES / "n00000000_china"
    shutil.copy(src / "n00000000_china_00000.jpg", tmp_path / "top.jpg")
    (tmp_path / "sub").mkdir()
    shutil.copy(src / "n00000000_china_00002.jpg", tmp_path / "sub" / "s.jpg")
    out = tmp_path.parent / f"out-{uuid.uuid4().hex[:6]}"
    assert im2rec.main(["--list", "--recursive", "--no-shuffle", str(out), str(tmp_path)]) == 0
    assert capsys.readouterr().out == ". 0\nsub 1\n"
    assert Path(str(out) + ".lst").read_text() == "0\t0.000000\ttop.jpg\n1\t1.000000\tsub/s.jpg\n"


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageListError, match="no image"):
        im2rec.run(im2rec_ns(["--list", "--recursive", str(tmp_path / "x"),
                              str(tmp_path / "empty")]))
    assert im2rec.main(["--list", str(tmp_path / "x"), str(tmp_path / "missing")]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def im2rec_ns(argv):
    p = __import__("argparse").ArgumentParser()
    im2rec.add_arguments(p)
    return p.parse_args(argv)


def test_defaults_match_mxnet():
    ns = im2rec_ns(["p", "r"])
    assert (ns.list, ns.exts, ns.chunks, ns.train_ratio, ns.test_ratio, ns.recursive,
            ns.shuffle) == (False, [".jpeg", ".jpg", ".png"], 1, 1.0, 0, False, True)
    assert (ns.pass_through, ns.resize, ns.center_crop, ns.quality, ns.num_thread, ns.color,
            ns.encoding, ns.pack_label) == (False, 0, False, 95, 1, 1, ".jpg", False)


def test_python_dash_m_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.run([sys.executable, "-m", "cloudrec.tools.im2rec", "--list",
                           "--recursive", "all", str(IMAGES)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (LISTS / "all.stdout").read_text()
    assert (tmp_path / "all.lst").read_bytes() == (LISTS / "all.lst").read_bytes()


def test_read_list_rejects_paths_outside_root_and_bad_lines():
    text = ("0\t1.000000\ta/x.jpg\n"
            "1\t1.000000\t../secret.jpg\n"
            "2\t1.000000\t/etc/passwd\n"
            "3\tnot-a-number\tb.jpg\n"
            "4\tonly-two\n"
            "\n"
            "5\t2.000000\ta/./y.jpg\n")
    good, bad = listing.read_list(text, "mem.lst")
    assert [e.index for e in good] == [0, 5]
    assert [b.lineno for b in bad] == [2, 3, 4, 5]
    assert "escapes the image root" in bad[0].reason and "mem.lst" in bad[0].reason
    assert "line 4" in bad[2].reason
