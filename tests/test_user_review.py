"""Misuse found by a user review: each case must end in a clear cloudrec error
naming the file, never a traceback from the CLI, a hang or silently wrong output."""
import shutil
from pathlib import Path

import pytest

from cloudrec.cli import main as cli_main
from cloudrec.errors import CloudrecError, ConfigError, ImageListError, RecordIOError

FIX = Path(__file__).parent / "fixtures" / "mxnet"
IMAGES = FIX / "images"


@pytest.fixture()
def packed(tmp_path):
    """A fresh pass-through pack of the fixture images: (tmp folder, .rec path)."""
    root = tmp_path / "imgs"
    shutil.copytree(IMAGES, root)
    prefix = str(tmp_path / "train")
    assert cli_main(["im2rec", "--list", "--recursive", prefix, str(root)]) == 0
    assert cli_main(["im2rec", "--pass-through", prefix, str(root)]) == 0
    return tmp_path, tmp_path / "train.rec"


def _one_line_error(capsys, *names):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for n in names:
        assert n in err, err
    return err


def test_im2rec_lst_not_utf8_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "imgs"
    shutil.copytree(IMAGES, root)
    (tmp_path / "bin.lst").write_bytes(b"0\t1.0\ta.jpg\n\xff\xfe\n")
    rc = cli_main(["im2rec", "--pass-through", str(tmp_path / "bin"), str(root)])
    assert rc == 1
    err = _one_line_error(capsys, "bin.lst", "line 2")
    assert "UTF-8" in err


def test_image_iter_lst_not_utf8_names_the_file(tmp_path):
    from cloudrec.image import ImageIter
    (tmp_path / "bin.lst").write_bytes(b"\xff\xfe\n")
    with pytest.raises(ImageListError, match="bin.lst"):
        ImageIter(batch_size=2, data_shape=(3, 8, 8), path_imglist=str(tmp_path / "bin.lst"),
                  path_root=str(IMAGES))


def test_inspect_unknown_aug_key_is_a_clear_error(packed, capsys):
    tmp, rec = packed
    capsys.readouterr()
    rc = cli_main(["inspect", str(rec), "--aug", "bogus=1", "--grid", str(tmp / "s.png")])
    assert rc == 1
    _one_line_error(capsys, "bogus")
    assert not (tmp / "s.png").exists()


def test_config_not_utf8_is_a_config_error(tmp_path, packed, capsys):
    _, rec = packed
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe")
    capsys.readouterr()
    assert cli_main(["--config", str(tmp_path / "bin.yaml"), "inspect", str(rec)]) == 1
    _one_line_error(capsys, "bin.yaml")


def test_config_bad_yaml_is_one_line_with_position(tmp_path, packed, capsys):
    _, rec = packed
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    capsys.readouterr()
    assert cli_main(["--config", str(tmp_path / "bad.yaml"), "inspect", str(rec)]) == 1
    _one_line_error(capsys, "bad.yaml", "line 2, column 1", "from line 1, column 4")


@pytest.mark.parametrize("op", ["read", "write"])
def test_recordio_closed_handle_raises_recordio_error(tmp_path, op):
    from cloudrec.recordio import MXRecordIO
    path = tmp_path / "a.rec"
    w = MXRecordIO(str(path), "w")
    w.write(b"abc")
    w.close()
    r = MXRecordIO(str(path), "r") if op == "read" else w
    r.close()
    with pytest.raises(RecordIOError, match="closed.*a.rec"):
        r.read() if op == "read" else r.write(b"x")


@pytest.mark.parametrize("content", [b"hello world, not a record file\n", bytes(range(256)) * 4])
def test_not_recordio_without_idx_is_an_error(tmp_path, content, capsys):
    from cloudrec.iterators import ImageRecordIter
    junk = tmp_path / "junk.rec"
    junk.write_bytes(content)
    with pytest.raises(RecordIOError, match="junk.rec"):
        ImageRecordIter(path_imgrec=str(junk), data_shape=(3, 8, 8), batch_size=2)
    assert cli_main(["inspect", str(junk)]) == 1
    _one_line_error(capsys, "junk.rec")


def test_empty_rec_without_idx_still_has_zero_records(tmp_path):
    from cloudrec.dataset import open_dataset
    (tmp_path / "e.rec").write_bytes(b"")
    assert len(open_dataset(str(tmp_path / "e.rec"), require_index=False)) == 0


@pytest.mark.parametrize("bs", [0, -1, "abc", 2.5])
def test_image_iter_batch_size_below_one_is_refused(bs):
    from cloudrec.image import ImageIter
    with pytest.raises(ValueError, match="batch_size"):
        ImageIter(batch_size=bs, data_shape=(3, 8, 8), imglist=[[0, "a.jpg"]],
                  path_root=str(IMAGES))


def test_image_iter_zero_data_shape_is_refused():
    from cloudrec.image import ImageIter
    with pytest.raises(ValueError, match="data_shape"):
        ImageIter(batch_size=2, data_shape=(3, 0, 8), imglist=[[0, "a.jpg"]],
                  path_root=str(IMAGES))


@pytest.mark.parametrize("flag,value", [("--cell", "0"), ("--cols", "0"), ("--grid-n", "-1"),
                                        ("--sample", "-3")])
def test_inspect_zero_cell_is_a_usage_error(packed, capsys, flag, value):
    tmp, rec = packed
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli_main(["inspect", str(rec), flag, value, "--grid", str(tmp / "g.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert not (tmp / "g.png").exists()


def test_error_key_is_printed_as_a_plain_number(packed):
    from cloudrec.recordio import MXIndexedRecordIO
    tmp, rec = packed
    lines = (tmp / "train.idx").read_text().splitlines()
    key, off = lines[2].split("\t")
    lines[2] = f"{key}\t{int(off) + 7}"  # into the middle of a record, unaligned
    (tmp / "mid.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(CloudrecError) as exc:
        MXIndexedRecordIO(str(tmp / "mid.idx"), str(rec), "r")
    msg = str(exc.value)
    assert f"key {key}," in msg and "mid.idx" in msg and "np." not in msg


@pytest.mark.parametrize("flag,value", [("--train-ratio", "-1"), ("--train-ratio", "1.5"),
                                        ("--test-ratio", "2")])
def test_im2rec_list_ratio_out_of_range_is_refused(tmp_path, capsys, flag, value):
    prefix = tmp_path / "r"
    rc = cli_main(["im2rec", "--list", "--recursive", flag, value, str(prefix), str(IMAGES)])
    assert rc == 1
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert not list(tmp_path.glob("r*.lst"))


@pytest.mark.parametrize("cmd", [["inspect"], ["index", "--check"]])
def test_storage_options_not_a_json_object_is_a_clear_error(packed, capsys, cmd):
    _, rec = packed
    capsys.readouterr()
    assert cli_main([cmd[0], str(rec), *cmd[1:], "--storage-options", "[1]"]) == 1
    _one_line_error(capsys, "train.rec", "storage options must be a dict")


@pytest.mark.parametrize("which", ["idx", "rec"])
def test_image_record_iter_empty_dataset_names_the_files(packed, which):
    from cloudrec.iterators import ImageRecordIter
    tmp, rec = packed
    if which == "idx":
        (tmp / "empty.idx").write_text("")
        kw = dict(path_imgrec=str(rec), path_imgidx=str(tmp / "empty.idx"))
    else:
        (tmp / "empty.rec").write_bytes(b"")
        kw = dict(path_imgrec=str(tmp / "empty.rec"))
    with pytest.raises(CloudrecError, match="no records") as exc:
        ImageRecordIter(data_shape=(3, 8, 8), batch_size=2, **kw)
    assert f"empty.{which}" in str(exc.value) and "fewer parts" not in str(exc.value)


@pytest.fixture()
def mixed(packed):
    """A .rec whose last two records are a non-image and a payload shorter than IRHeader."""
    from cloudrec.recordio import IRHeader, MXIndexedRecordIO, pack
    tmp, rec = packed
    src = MXIndexedRecordIO(str(tmp / "train.idx"), str(rec), "r")
    w = MXIndexedRecordIO(str(tmp / "mix.idx"), str(tmp / "mix.rec"), "w")
    for k in src.keys[:3]:
        w.write_idx(k, src.read_idx(k))
    w.write_idx(100, pack(IRHeader(0, 5.0, 100, 0), b"not an image at all"))
    w.write_idx(101, b"short")
    w.close()
    return tmp


@pytest.mark.parametrize("with_idx", [True, False])
def test_image_iter_short_record_names_file_and_record(mixed, with_idx):
    from cloudrec.errors import HeaderError
    from cloudrec.image import ImageIter
    kw = dict(path_imgidx=str(mixed / "mix.idx")) if with_idx else {}
    it = ImageIter(batch_size=5, data_shape=(3, 8, 8), path_imgrec=str(mixed / "mix.rec"),
                   on_error="skip", **kw)
    with pytest.raises(HeaderError) as exc:
        for _ in it:
            pass
    msg = str(exc.value)
    assert "mix.rec" in msg and ("key 101" in msg if with_idx else "record #4" in msg), msg


def test_inspect_problem_lines_print_plain_keys(mixed, capsys):
    capsys.readouterr()
    assert cli_main(["inspect", str(mixed / "mix.rec")]) == 0
    out = capsys.readouterr().out
    assert "key 100" in out and "key 101" in out and "np." not in out


def test_config_storage_options_not_a_mapping(tmp_path, packed, capsys):
    _, rec = packed
    (tmp_path / "o.yaml").write_text("storage:\n  options: 5\n")
    capsys.readouterr()
    assert cli_main(["--config", str(tmp_path / "o.yaml"), "inspect", str(rec)]) == 1
    _one_line_error(capsys, "o.yaml", "storage.options")


@pytest.mark.parametrize("part_index", [5, -1])
def test_image_iter_part_index_out_of_range_says_why(packed, part_index):
    from cloudrec.image import ImageIter
    tmp, rec = packed
    with pytest.raises(AssertionError, match="part_index"):
        ImageIter(batch_size=2, data_shape=(3, 8, 8), path_imgrec=str(rec),
                  path_imgidx=str(tmp / "train.idx"), num_parts=2, part_index=part_index)


def test_unreadable_record_names_the_location_once(packed):
    from cloudrec.recordio import MXIndexedRecordIO
    tmp, rec = packed
    lines = (tmp / "train.idx").read_text().splitlines()
    key, off = lines[2].split("\t")
    lines[2] = f"{key}\t{int(off) + 8}"  # aligned, inside a record
    (tmp / "mid8.idx").write_text("\n".join(lines) + "\n")
    r = MXIndexedRecordIO(str(tmp / "mid8.idx"), str(rec), "r")
    with pytest.raises(RecordIOError) as exc:
        r.read_idx(int(key))
    msg = str(exc.value)
    assert msg.count("train.rec") == 1 and f"key {key}" in msg and f"offset {int(off) + 8}" in msg


def test_idx_past_the_rec_names_the_location_once(tmp_path):
    from cloudrec.iterators import ImageRecordIter
    (tmp_path / "short.rec").write_bytes(b"\x0a\x23\xd7\xce" + bytes(12))
    (tmp_path / "x.idx").write_text("0\t0\n1\t4096\n")
    with pytest.raises(CloudrecError) as exc:
        ImageRecordIter(path_imgrec=str(tmp_path / "short.rec"), path_imgidx=str(tmp_path / "x.idx"),
                        data_shape=(3, 8, 8), batch_size=1)
    msg = str(exc.value)
    assert msg.count("x.idx") == 1 and "short.rec" in msg and "line 2" in msg, msg


def test_idx_offset_past_the_end_names_both_files(packed):
    from cloudrec.errors import IndexFileError
    from cloudrec.recordio import MXIndexedRecordIO
    tmp, rec = packed
    (tmp / "far.idx").write_text("7\t99999996\n")
    with pytest.raises(IndexFileError, match="past the end of .*train.rec.*far.idx"):
        MXIndexedRecordIO(str(tmp / "far.idx"), str(rec), "r")  # refused at open


def test_index_out_onto_a_folder_is_refused(packed, capsys):
    tmp, rec = packed
    (tmp / "dir.idx").mkdir()
    capsys.readouterr()
    assert cli_main(["index", str(rec), "--out", str(tmp / "dir.idx"), "--force"]) == 1
    _one_line_error(capsys, "dir.idx", "folder")
    assert list((tmp / "dir.idx").iterdir()) == []  # nothing moved into it
    assert not list(tmp.glob(".*.tmp-*"))


def test_inspect_grid_onto_a_folder_is_refused(packed, capsys):
    tmp, rec = packed
    capsys.readouterr()
    assert cli_main(["inspect", str(rec), "--grid", str(tmp / "imgs")]) == 1
    _one_line_error(capsys, "imgs", "folder")
    assert not list((tmp / "imgs").glob(".*"))


@pytest.mark.parametrize("cmd", ["list", "grid"])
def test_output_under_a_file_is_a_clear_error(packed, capsys, cmd):
    tmp, rec = packed
    capsys.readouterr()
    if cmd == "list":
        argv = ["im2rec", "--list", "--recursive", str(rec / "x"), str(IMAGES)]
    else:
        argv = ["inspect", str(rec), "--grid", str(rec / "x.png")]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "train.rec/x" in err, err


def test_im2rec_rec_name_taken_by_a_folder_is_refused(packed, capsys):
    tmp, _ = packed
    (tmp / "p.rec").mkdir()
    shutil.copy(tmp / "train.lst", tmp / "p.lst")
    capsys.readouterr()
    assert cli_main(["im2rec", "--pass-through", str(tmp / "p"), str(tmp / "imgs")]) == 1
    err = _one_line_error(capsys, "p.rec", "folder")
    assert err.count("p.rec") == 1
    assert list((tmp / "p.rec").iterdir()) == []


def test_cli_os_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "loop.rec").symlink_to(tmp_path / "loop.rec")  # ELOOP on open
    capsys.readouterr()
    assert cli_main(["index", str(tmp_path / "loop.rec"), "--out", str(tmp_path / "o.idx")]) == 1
    _one_line_error(capsys, "loop.rec")


def test_image_record_iter_imglist_not_utf8_names_the_file(packed):
    from cloudrec.iterators import ImageRecordIter
    tmp, rec = packed
    (tmp / "bin.lst").write_bytes(b"0\t1\ta.jpg\n\xff\xfe\n")
    with pytest.raises(ImageListError, match=r"bin.lst, line 2"):
        ImageRecordIter(path_imgrec=str(rec), path_imgidx=str(tmp / "train.idx"),
                        path_imglist=str(tmp / "bin.lst"), data_shape=(3, 8, 8), batch_size=2)


@pytest.mark.parametrize("bad", ["text", None, 5])
def test_recordio_write_non_bytes_names_the_file(tmp_path, bad):
    from cloudrec.recordio import MXRecordIO
    w = MXRecordIO(str(tmp_path / "w.rec"), "w")
    with pytest.raises(TypeError, match="w.rec"):
        w.write(bad)
    w.close()
    assert (tmp_path / "w.rec").read_bytes() == b""  # nothing (not 5 zero bytes) was written


def test_write_idx_bad_key_names_the_index(tmp_path):
    from cloudrec.recordio import MXIndexedRecordIO
    w = MXIndexedRecordIO(str(tmp_path / "w.idx"), str(tmp_path / "w.rec"), "w")
    with pytest.raises(ValueError, match=r"'a'.*w.idx"):
        w.write_idx("a", b"x")
    w.close()
    assert (tmp_path / "w.rec").read_bytes() == b""


def test_lst_with_a_utf8_bom_packs_like_without(packed):
    tmp, rec = packed
    (tmp / "bom.lst").write_bytes(b"\xef\xbb\xbf" + (tmp / "train.lst").read_bytes())
    assert cli_main(["im2rec", "--pass-through", str(tmp / "bom"), str(tmp / "imgs")]) == 0
    assert (tmp / "bom.rec").read_bytes() == rec.read_bytes()


def test_pass_through_warns_about_ignored_reencode_flags(packed, capsys):
    tmp, rec = packed
    before = rec.read_bytes()
    capsys.readouterr()
    assert cli_main(["im2rec", "--pass-through", "--resize", "8", "--quality", "50",
                     str(tmp / "train"), str(tmp / "imgs")]) == 0
    err = capsys.readouterr().err
    assert "ignoring --resize, --quality" in err
    assert rec.read_bytes() == before  # MXNet's behaviour: files packed unchanged
