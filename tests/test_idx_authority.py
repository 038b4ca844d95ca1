"""Issue #15 item 1: an `.idx` that exists is authoritative, on every reader.

A `.rec` cut at a record boundary next to its intact `.idx`, an `.idx` that
lost its first line, duplicate offsets and offsets past the end are errors
naming both files (never a silent scan, a dropped or a doubled record);
``on_index_mismatch='scan'`` is the documented, warned way back to a scan.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cloudrec.dataset import IndexMismatchWarning, open_dataset
from cloudrec.errors import CloudrecError, IndexFileError
from cloudrec.format.idx import parse_idx

FIX = Path(__file__).parent / "fixtures" / "mxnet" / "pack" / "passthrough"


def _lines(idx: bytes):
    return idx.decode().splitlines(keepends=True)


def _cut_at_boundary(rec: bytes, idx: bytes, keep: int) -> bytes:
    _, offs = parse_idx(idx)
    return rec[:int(np.sort(offs)[keep])]


def _damage(kind: str, rec: bytes, idx: bytes):
    """(rec bytes, idx bytes) of one of the damage kinds the issue lists."""
    lines = _lines(idx)
    if kind == "cut_at_boundary":      # 16 of 24 records left, .idx intact
        return _cut_at_boundary(rec, idx, 16), idx
    if kind == "idx_without_first_line":
        return rec, "".join(lines[1:]).encode()
    if kind == "duplicate_offset":     # line 3 points at line 2's record
        k3 = lines[2].split("\t")[0]
        lines[2] = f"{k3}\t{lines[1].split(chr(9))[1]}"
        return rec, "".join(lines).encode()
    if kind == "offset_past_end":
        return rec, idx + f"999\t{len(rec) + 64}\n".encode()
    if kind == "offset_2_63":
        return rec, idx + f"999\t{2**63 - 4}\n".encode()
    raise AssertionError(kind)


KINDS = ["cut_at_boundary", "idx_without_first_line", "duplicate_offset", "offset_past_end",
         "offset_2_63"]


@pytest.fixture
def pair(tmp_path):
    def make(kind: str):
        rec, idx = _damage(kind, (FIX / "all.rec").read_bytes(), (FIX / "all.idx").read_bytes())
        (tmp_path / "all.rec").write_bytes(rec)
        (tmp_path / "all.idx").write_bytes(idx)
        return tmp_path / "all.rec", tmp_path / "all.idx"
    return make


def _names_both(exc: BaseException) -> None:
    msg = str(exc)
    assert "all.rec" in msg and "all.idx" in msg, msg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("require_index", [True, False])
def test_open_dataset_refuses_a_disagreeing_idx(pair, kind, require_index):
    rec, _ = pair(kind)
    with pytest.raises(IndexFileError) as exc:
        open_dataset(str(rec), require_index=require_index)
    _names_both(exc.value)


@pytest.mark.parametrize("kind", KINDS)
def test_scan_fallback_is_documented_and_warned(pair, kind):
    rec, _ = pair(kind)
    with pytest.warns(IndexMismatchWarning, match="all.rec"):
        ds = open_dataset(str(rec), require_index=False, on_index_mismatch="scan")
    want = 16 if kind == "cut_at_boundary" else 24   # the scan finds what the .rec holds
    assert len(ds) == want
    assert ds.table.offset[0] == 0 and len(np.unique(ds.table.offset)) == want


@pytest.mark.parametrize("kind", KINDS)
def test_image_record_iter_without_path_imgidx_refuses_the_sibling(pair, kind):
    from cloudrec.iterators import ImageRecordIter
    rec, idx = pair(kind)
    for kw in ({}, {"path_imgidx": str(idx)}):
        with pytest.raises(IndexFileError) as exc:
            ImageRecordIter(path_imgrec=str(rec), data_shape=(3, 8, 8), batch_size=4, **kw)
        _names_both(exc.value)


@pytest.mark.parametrize("kind", KINDS)
def test_image_iter_refuses(pair, kind):
    from cloudrec.iterators import ImageIter
    rec, idx = pair(kind)
    with pytest.raises(IndexFileError) as exc:
        ImageIter(batch_size=4, data_shape=(3, 8, 8), path_imgrec=str(rec),
                  path_imgidx=str(idx))
    _names_both(exc.value)


@pytest.mark.parametrize("kind", KINDS)
def test_mx_indexed_record_io_and_torch_datasets_refuse(pair, kind):
    from cloudrec.recordio import MXIndexedRecordIO
    from cloudrec.torch import IndexedRecordDataset, RecordIterableDataset
    rec, idx = pair(kind)
    with pytest.raises(IndexFileError) as exc:
        MXIndexedRecordIO(str(idx), str(rec), "r")
    _names_both(exc.value)
    with pytest.raises(IndexFileError):
        IndexedRecordDataset(str(idx), str(rec))
    with pytest.raises(IndexFileError):
        RecordIterableDataset(str(rec), batch_size=4)


def test_intact_pair_still_opens_everywhere(tmp_path):
    from cloudrec.recordio import MXIndexedRecordIO
    shutil.copy(FIX / "all.rec", tmp_path / "all.rec")
    shutil.copy(FIX / "all.idx", tmp_path / "all.idx")
    ds = open_dataset(str(tmp_path / "all.rec"))
    assert len(ds) == 24 and ds.open_seconds["total"] >= ds.open_seconds["fetch"] >= 0
    r = MXIndexedRecordIO(str(tmp_path / "all.idx"), str(tmp_path / "all.rec"), "r")
    assert len(r.keys) == 24 and r.read_idx(r.keys[-1])
    r.close()


def test_duplicate_offsets_never_read_twice_by_the_torch_dataset(pair):
    # issue #15 item 2: RecordIterableDataset read one record twice and dropped another
    from cloudrec.torch import RecordIterableDataset
    rec, _ = pair("duplicate_offset")
    with pytest.raises(IndexFileError, match="listed twice"):
        RecordIterableDataset(str(rec), decode=lambda b: len(b), batch_size=4)


def test_missing_rec_tail_error_is_a_cloudrec_error_with_lines(pair):
    rec, _ = pair("cut_at_boundary")
    with pytest.raises(CloudrecError) as exc:
        open_dataset(str(rec))
    assert exc.value.line is not None and exc.value.offset is not None


def test_on_index_mismatch_is_checked():
    with pytest.raises(CloudrecError, match="on_index_mismatch"):
        open_dataset("x.rec", on_index_mismatch="ignore")
