"""`cloudrec index` rebuilds MXNet's `.idx` byte for byte from the `.rec` alone, in
small ranged chunks, and refuses truncated or corrupt `.rec` files with the offset."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import fsspec
import pytest
from hypothesis import given, settings, strategies as st

from cloudrec import cli
from cloudrec.errors import RecordIOError
from cloudrec.format import parse_idx
from cloudrec.tools.index import rebuild_index, scan_records

FIX = Path(__file__).parent / "fixtures" / "mxnet"
ID_KEYED = sorted(FIX.glob("pack/*/*.rec")) + [
    FIX / "api" / n for n in ("multipart_img.rec", "pack_img.rec", "truncated.rec",
                              "garbage.rec", "empty_payload.rec")]


@pytest.mark.parametrize("rec", ID_KEYED, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_rebuilt_idx_equals_mxnet_idx(rec, chunk):
    data, n, used = rebuild_index(str(rec), chunk_size=chunk)
    assert used == "id"
    assert data == rec.with_suffix(".idx").read_bytes()
    assert n == len(rec.with_suffix(".idx").read_text().splitlines())


def test_raw_records_get_ordinal_keys():
    # multipart.rec: raw payloads (no IRHeader) with escaped magics, split into parts
    data, n, used = rebuild_index(str(FIX / "api" / "multipart.rec"), chunk_size=4096)
    assert used == "seq" and data == (FIX / "api" / "multipart.rec").with_suffix(".idx").read_bytes()
    # raw.rec has empty and short payloads: no header -> ordinals; forcing ids is an error
    data, n, used = rebuild_index(str(FIX / "api" / "raw.rec"))
    assert (n, used) == (11, "seq")
    with pytest.raises(RecordIOError, match="no IRHeader"):
        rebuild_index(str(FIX / "api" / "raw.rec"), key="id")


def test_custom_keys_keep_offsets():
    """headers.rec was written with arbitrary keys: offsets are recovered, keys are ids/ordinals."""
    rec = FIX / "api" / "headers.rec"
    want_keys, want_offsets = parse_idx(rec.with_suffix(".idx").read_bytes())
    data, n, used = rebuild_index(str(rec), key="seq")
    keys, offsets = parse_idx(data)
    assert sorted(offsets.tolist()) == sorted(want_offsets.tolist())
    assert keys.tolist() == list(range(n))


def _offsets(rec: Path):
    return parse_idx(rec.with_suffix(".idx").read_bytes())[1].tolist()


PASS = FIX / "pack" / "passthrough" / "all.rec"


def test_truncated_rec_is_a_clear_error(tmp_path):
    whole = PASS.read_bytes()
    offs = sorted(_offsets(PASS))
    last = offs[-1]
    cases = {"mid_payload": last + 40, "mid_head": last + 6, "in_magic": last + 2}
    for name, cut in cases.items():
        p = tmp_path / f"{name}.rec"
        p.write_bytes(whole[:cut])
        with pytest.raises(RecordIOError) as ei:
            rebuild_index(str(p), chunk_size=4096)
        assert str(p) in str(ei.value) and ei.value.offset == last, name
        assert cli.main(["index", str(p)]) == 1
        assert not p.with_suffix(".idx").exists()


def test_garbage_between_records_is_named(tmp_path):
    whole = PASS.read_bytes()
    offs = sorted(_offsets(PASS))
    p = tmp_path / "g.rec"
    p.write_bytes(whole[:offs[5]] + b"JUNKJUNK" + whole[offs[5]:])
    with pytest.raises(RecordIOError, match="not a record") as ei:
        rebuild_index(str(p))
    assert ei.value.offset == offs[5]
    # a flipped magic in the middle: the record before it swallows nothing, the scan stops there
    bad = bytearray(whole)
    bad[offs[7]] ^= 0xFF
    p.write_bytes(bytes(bad))
    with pytest.raises(RecordIOError) as ei:
        rebuild_index(str(p))
    assert ei.value.offset == offs[7]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=PASS.stat().st_size - 1),
       st.sampled_from([4096, 8192, 65536]))
def test_any_cut_either_errors_at_the_cut_record_or_keeps_whole_records(cut, chunk):
    whole = PASS.read_bytes()[:cut]
    offs = sorted(_offsets(PASS))
    ends = offs[1:] + [PASS.stat().st_size]
    k = max(i for i, o in enumerate(offs) if o < cut)  # the record the cut falls into
    payload_end = offs[k] + 8 + int.from_bytes(PASS.read_bytes()[offs[k] + 4:offs[k] + 8],
                                               "little")
    try:
        got = [r.offset for r in scan_records(lambda s, e: whole[s:e], len(whole), "x.rec",
                                              chunk)]
    except RecordIOError as exc:
        assert cut < payload_end and exc.offset == offs[k]
    else:
        assert cut >= payload_end  # only a cut inside the zero padding is harmless
        assert got == offs[:k + 1]
        assert cut <= ends[k]


def test_cli_writes_refuses_checks_and_repairs(tmp_path, capsys):
    rec = tmp_path / "all.rec"
    shutil.copy(PASS, rec)
    want = PASS.with_suffix(".idx").read_bytes()
    assert cli.main(["index", str(rec)]) == 0
    assert (tmp_path / "all.idx").read_bytes() == want
    assert "24 records, keys by id" in capsys.readouterr().out
    assert cli.main(["index", str(rec)]) == 1  # exists: refuse without --force
    assert "--force" in capsys.readouterr().err
    assert cli.main(["index", "--check", str(rec)]) == 0
    (tmp_path / "all.idx").write_bytes(want[: len(want) // 2])  # damaged index
    assert cli.main(["index", "--check", str(rec)]) == 1
    assert "DIFFERS" in capsys.readouterr().out
    assert cli.main(["index", "--force", str(rec)]) == 0
    assert (tmp_path / "all.idx").read_bytes() == want
    assert cli.main(["index", "--out", str(tmp_path / "other.idx"), "--key", "seq", str(rec)]) == 0
    keys, offsets = parse_idx((tmp_path / "other.idx").read_bytes())
    assert keys.tolist() == list(range(24)) and offsets.tolist() == parse_idx(want)[1].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.idx", "all.rec", "other.idx"]


def test_memory_url_in_small_chunks():
    fs = fsspec.filesystem("memory")
    base = f"/index-{uuid.uuid4().hex[:8]}"
    fs.pipe_file(f"{base}/uniq.rec", (FIX / "pack" / "uniq" / "uniq.rec").read_bytes())
    assert cli.main(["index", "--chunk-size", "4096", f"memory://{base}/uniq.rec"]) == 0
    assert fs.cat_file(f"{base}/uniq.idx") == (FIX / "pack" / "uniq" / "uniq.idx").read_bytes()
    assert sorted(fs.ls(base, detail=False)) == [f"{base}/uniq.idx", f"{base}/uniq.rec"]


def test_missing_and_empty_rec(tmp_path):
    assert cli.main(["index", str(tmp_path / "nope.rec")]) == 1
    (tmp_path / "empty.rec").write_bytes(b"")
    with pytest.raises(RecordIOError, match="no records"):
        rebuild_index(str(tmp_path / "empty.rec"))


def test_auto_keys_fall_back_to_ordinals_on_duplicate_ids():
    from cloudrec.format import IRHeader, pack
    from cloudrec.tools.index import ScannedRecord, keys_for
    recs = [ScannedRecord(i * 64, 30, pack(IRHeader(0, 1.0, 7 if i < 2 else i, 0), b"xxxxxx")[:24])
            for i in range(4)]
    keys, used = keys_for(recs, "auto")
    assert used == "seq" and keys.tolist() == [0, 1, 2, 3]
    keys, used = keys_for(recs, "id")
    assert used == "id" and keys.tolist() == [7, 7, 2, 3]
