"""Issue #15 item 4: ``im2rec --list --recursive`` ends on symlink loops (each
reported once) and skips non-UTF-8 file names with a message naming the bytes."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


from cloudrec import cli
from cloudrec.tools import listing

IMAGES = sorted((Path(__file__).parent / "fixtures" / "mxnet" / "images").rglob("*.jp*g"))


def _tree(root: Path) -> None:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            shutil.copy(IMAGES[i], root / label / f"{i}.jpg")


def _list(tmp_path, root, capsys):
    assert cli.main(["im2rec", "--list", "--recursive", "--no-shuffle", str(tmp_path / "out"),
                     str(root)]) == 0
    cap = capsys.readouterr()
    return (tmp_path / "out.lst").read_text().splitlines(), cap.err


def test_two_symlink_loops_end_and_are_reported_once(tmp_path, capsys):
    root = tmp_path / "imgs"
    _tree(root)
    os.symlink("..", root / "a" / "up")            # a/up -> root
    os.symlink(str(root / "b"), root / "b" / "self")  # b/self -> b
    lines, err = _list(tmp_path, root, capsys)
    assert [ln.split("\t")[-1] for ln in lines] == ["a/0.jpg", "a/1.jpg", "b/0.jpg", "b/1.jpg"]
    loops = [ln for ln in err.splitlines() if "symlink loop" in ln]
    assert len(loops) == 2, err
    assert any("a/up" in ln for ln in loops) and any("b/self" in ln for ln in loops)


def test_a_symlink_to_a_sibling_is_still_followed_like_mxnet(tmp_path, capsys):
    root = tmp_path / "imgs"
    _tree(root)
    os.symlink(str(root / "a"), root / "c")  # not a loop: MXNet lists c/ as its own label
    lines, err = _list(tmp_path, root, capsys)
    assert [ln.split("\t")[-1] for ln in lines][-2:] == ["c/0.jpg", "c/1.jpg"]
    assert "symlink loop" not in err


def test_non_utf8_names_are_skipped_with_their_bytes(tmp_path, capsys):
    root = tmp_path / "imgs"
    _tree(root)
    bad = os.fsdecode(b"caf\xe9.jpg")              # latin-1 e-acute: not UTF-8
    shutil.copy(IMAGES[0], os.path.join(os.fsencode(root / "a"), b"caf\xe9.jpg"))
    os.mkdir(os.path.join(os.fsencode(root), b"d\xff"))
    shutil.copy(IMAGES[0], os.path.join(os.fsencode(root), b"d\xff", b"x.jpg"))
    lines, err = _list(tmp_path, root, capsys)
    assert [ln.split("\t")[-1] for ln in lines] == ["a/0.jpg", "a/1.jpg", "b/0.jpg", "b/1.jpg"]
    assert "b'caf\\xe9.jpg'" in err and "b'd\\xff'" in err and "UTF-8" in err
    assert bad not in "\n".join(lines)


def test_flat_listing_reports_too(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    shutil.copy(IMAGES[0], root / "ok.jpg")
    shutil.copy(IMAGES[0], os.path.join(os.fsencode(root), b"n\xe9.jpg"))
    seen = []
    from fsspec.implementations.local import LocalFileSystem
    entries, _ = listing.list_images(LocalFileSystem(), str(root), False, report=seen.append)
    assert [e.path for e in entries] == ["ok.jpg"] and len(seen) == 1 and "n\\xe9" in seen[0]
