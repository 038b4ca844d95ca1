"""The CLI behaves like a CLI: options after the sub-command, defaults in --help, im2rec's
``--flag=1`` spelling (#16 item 9), ``--exts ... --``, warnings for flags that do nothing,
and no stale error report after a clean repack."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudrec.cli import build_parser, main
from cloudrec.format.lst import parse_lst_line
from cloudrec.recordio import MXIndexedRecordIO, unpack_img
from cloudrec.tools import im2rec


def _photos(root: Path, per_class: int = 5) -> Path:
    """Two class folders of small JPEGs whose pixel value encodes (class, index)."""
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.full((16 + i, 24, 3), 40 * c + 8 * i, np.uint8)
            assert cv2.imwrite(str(root / name / f"{i}.jpg"), img)
    return root


def _lst_paths(path: Path):
    return [parse_lst_line(line, str(path), n).path
            for n, line in enumerate(path.read_text().splitlines(), 1)]


# -- options after the sub-command -------------------------------------------------------------

def test_cache_dir_before_or_after_the_action(tmp_path, capsys):
    for n, args in enumerate((["cache", "ls", "--dir", "{d}"], ["cache", "--dir", "{d}", "ls"])):
        d = tmp_path / f"c{n}"
        assert main([a.format(d=d) for a in args]) == 0
        assert capsys.readouterr().out.strip().endswith(f"0 shard(s), 0 bytes in {d}")
        assert d.is_dir()  # the cache was opened there, not in the default folder


def test_cache_clear_takes_dir_after_the_action(tmp_path, capsys):
    assert main(["cache", "clear", "--dir", str(tmp_path / "cc")]) == 0
    assert f"from {tmp_path / 'cc'}" in capsys.readouterr().out


def test_global_options_after_the_command(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  cache:\n    dir: {tmp_path / 'fromcfg'}\n")
    assert main(["cache", "ls", "--config", str(cfg)]) == 0
    assert str(tmp_path / "fromcfg") in capsys.readouterr().out
    ns = build_parser(["inspect"]).parse_args(["inspect", "x.rec", "--debug"])
    assert ns.debug is True
    ns = build_parser(["inspect"]).parse_args(["--debug", "inspect", "x.rec"])
    assert ns.debug is True


# -- help ----------------------------------------------------------------------------------------

def _help(args) -> str:
    res = subprocess.run([sys.executable, "-m", "cloudrec", *args, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.split())


def test_im2rec_help_shows_defaults_and_the_exts_rule():
    text = _help(["im2rec"])
    for needle in ("(default: 95)", "(default: .jpeg .jpg .png)", "(default: 1.0)",
                   "(default: thread)", "end it with --", "=1/0/true/false"):
        assert needle in text, needle


def test_every_demo_option_has_help_text():
    parser = build_parser(["demo"])
    demo = parser._subparsers._group_actions[0].choices["demo"]
    for action in demo._actions:
        assert action.help and action.help.strip(), action.option_strings
    text = _help(["demo"])
    assert "(default: 2000)" in text and "(default: 2)" in text


def test_top_level_help_and_version():
    text = _help([])
    assert "config" in text and "--version" in text and "--debug" in text


# -- im2rec's boolean flags ------------------------------------------------------------------------

def test_tutorial_spelling_of_boolean_flags(tmp_path):
    """The seed tutorial's `--list=1 --recursive=1 --shuffle=1` then `--pass-through=1`."""
    root = _photos(tmp_path / "img")
    assert im2rec.main(["--list=1", "--recursive=1", "--shuffle=1", "--train-ratio", "0.8",
                        "--test-ratio", "0.2", str(tmp_path / "caltech"), str(root)]) == 0
    train, test = tmp_path / "caltech_train.lst", tmp_path / "caltech_test.lst"
    assert len(_lst_paths(train)) == 8 and len(_lst_paths(test)) == 2
    assert im2rec.main(["--pass-through=1", "--no-progress", str(tmp_path / "caltech_train"),
                        str(root)]) == 0
    rec = MXIndexedRecordIO(str(tmp_path / "caltech_train.idx"),
                            str(tmp_path / "caltech_train.rec"), "r")
    assert len(rec.keys) == 8
    header, img = unpack_img(rec.read_idx(rec.keys[0]))
    assert img.ndim == 3 and header.label in (0.0, 1.0)
    rec.close()


@pytest.mark.parametrize("spelling,expected", [
    (["--list"], True), (["--list=1"], True), (["--list=true"], True), (["--list=Yes"], True),
    (["--list=0"], False), (["--list=false"], False), ([], False)])
def test_list_flag_values(spelling, expected):
    p = argparse.ArgumentParser()
    im2rec.add_arguments(p)  # a plain parser too: --list PREFIX ROOT keeps its positionals
    ns = p.parse_args(spelling + ["pre", "root"])
    assert (ns.list, ns.prefix, ns.root) == (expected, "pre", "root")


def test_shuffle_and_no_shuffle_spellings():
    p = argparse.ArgumentParser()
    im2rec.add_arguments(p)
    assert p.parse_args(["a", "b"]).shuffle is True
    assert p.parse_args(["--shuffle=0", "a", "b"]).shuffle is False
    assert p.parse_args(["--no-shuffle", "a", "b"]).shuffle is False
    assert p.parse_args(["--no-shuffle=0", "a", "b"]).shuffle is True
    assert p.parse_args(["--recur", "a", "b"]).recursive is True  # an unambiguous prefix
    assert p.parse_args(["--no-progress", "a", "b"]).progress is False


def test_walk_order_with_shuffle_zero_equals_no_shuffle(tmp_path):
    root = _photos(tmp_path / "img")
    assert im2rec.main(["--list=1", "--recursive=1", "--shuffle=0", str(tmp_path / "a"),
                        str(root)]) == 0
    assert im2rec.main(["--list", "--recursive", "--no-shuffle", str(tmp_path / "b"),
                        str(root)]) == 0
    assert (tmp_path / "a.lst").read_bytes() == (tmp_path / "b.lst").read_bytes()
    assert _lst_paths(tmp_path / "a.lst")[:2] == ["cats/0.jpg", "cats/1.jpg"]


def test_bad_boolean_value_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["im2rec", "--list=maybe", "p", "r"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--list" in err[0] and "'maybe'" in err[0]


def test_exts_list_ends_at_double_dash(tmp_path):
    root = _photos(tmp_path / "img")
    (root / "cats" / "extra.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1])
    assert im2rec.main(["--list", "--recursive", "--exts", ".png", "--", str(tmp_path / "p"),
                        str(root)]) == 0
    assert _lst_paths(tmp_path / "p.lst") == ["cats/extra.png"]


def test_exts_before_the_positionals_explains_itself(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["im2rec", "--list", "--exts", ".png", str(tmp_path / "p"), str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "required: prefix, root" in err[0]
    assert "--exts takes every word after it" in err[0] and "end its list with --" in err[0]


def test_test_ratio_without_train_ratio_warns_which_lists_are_written(tmp_path, capsys):
    root = _photos(tmp_path / "img")
    assert im2rec.main(["--list", "--recursive", "--test-ratio", "0.2", str(tmp_path / "c"),
                        str(root)]) == 0
    err = capsys.readouterr().err
    assert "--test-ratio 0.2 has no effect" in err and "c.lst" in err
    assert "--train-ratio 0.8" in err
    assert sorted(p.name for p in tmp_path.glob("*.lst")) == ["c.lst"]  # MXNet's behaviour
    assert len(_lst_paths(tmp_path / "c.lst")) == 10


# -- a clean repack, inspect --aug ----------------------------------------------------------------

def test_clean_repack_removes_the_stale_error_report(tmp_path):
    root = _photos(tmp_path / "img")
    assert im2rec.main(["--list", "--recursive", str(tmp_path / "d"), str(root)]) == 0
    broken = root / "dogs" / "3.jpg"
    good = broken.read_bytes()
    broken.write_bytes(b"not an image")
    assert im2rec.main(["--on-error", "skip", "--no-progress", str(tmp_path / "d"),
                        str(root)]) == 0
    report = tmp_path / "d.errors.tsv"
    assert "dogs/3.jpg" in report.read_text()
    broken.write_bytes(good)
    assert im2rec.main(["--on-error", "skip", "--no-progress", str(tmp_path / "d"),
                        str(root)]) == 0
    assert not report.exists()
    rec = MXIndexedRecordIO(str(tmp_path / "d.idx"), str(tmp_path / "d.rec"), "r")
    assert len(rec.keys) == 10
    rec.close()


def test_inspect_aug_without_grid_warns(tmp_path, capsys):
    root = _photos(tmp_path / "img")
    assert im2rec.main(["--list", "--recursive", str(tmp_path / "d"), str(root)]) == 0
    assert im2rec.main(["--pass-through", "--no-progress", str(tmp_path / "d"), str(root)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "d.rec"), "--aug", "rand_mirror=1"]) == 0
    captured = capsys.readouterr()
    assert "--aug has no effect without --grid" in captured.err
    assert "10" in captured.out
