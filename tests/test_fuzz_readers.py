"""Issue #15: a bounded, seeded mutation fuzz over every reader.

A small valid pack (6 JPEG records) is damaged in one of ~30 ways (bytes of
the `.rec`, lines of the `.idx`, record payloads re-framed validly) and read by
MXRecordIO, MXIndexedRecordIO, ImageRecordIter with and without `.idx`,
ImageIter, the torch datasets, ``inspect`` and ``index``.  Every run must end in
one of: an exception of cloudrec's classes (CloudrecError), or output equal
to what the damage allows (all records intact; or all but the one record
whose inside was changed, which no checksum-less format can notice; or a
prefix of the records for the one undetectable case, a `.rec` cut exactly at
a record boundary with no `.idx`).  Anything else is a *finding*: a foreign
exception (type, innermost cloudrec frame) or a silent wrong result.

``python tests/test_fuzz_readers.py --cases 600 --json fuzz.json`` runs a
bigger campaign and writes the figures the README quotes.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import struct
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest

from cloudrec.errors import CloudrecError

N_RECORDS = 6
DEFAULT_CASES = int(os.environ.get("CLOUDREC_FUZZ_CASES", "200"))
SEED = 15
SLOW_RUN_S = 10  # a reader run this slow on a 5 KB input counts as a (near) hang


# -- the base pack ------------------------------------------------------------------------------

@dataclass
class Pack:
    rec: bytes
    idx: bytes
    offsets: List[int]          # record heads in file order
    ends: List[int]             # end of each record's padded bytes
    payloads: List[bytes]


def _jpeg(rng: np.random.Generator, h: int = 12, w: int = 12) -> bytes:
    import cv2
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _payload(i: int, image: bytes) -> bytes:
    from cloudrec.format.irheader import IRHeader, pack
    return pack(IRHeader(0, float(i % 3), i, 0), image)


def build_pack(payloads: List[bytes]) -> Pack:
    from cloudrec.format.framing import encode_record
    from cloudrec.format.idx import format_idx
    parts, offs, ends, pos = [], [], [], 0
    for p in payloads:
        enc = encode_record(p)
        offs.append(pos)
        pos += len(enc)
        ends.append(pos)
        parts.append(enc)
    return Pack(b"".join(parts), format_idx(range(len(payloads)), offs), offs, ends,
                list(payloads))


def _with_aligned_magic(image: bytes) -> bytes:
    """The JPEG with a comment segment holding RecordIO's magic at payload offset 32, so
    its record is framed in several parts (the multi-part path is fuzzed too)."""
    from cloudrec.format.framing import MAGIC_BYTES
    com = b"\xff\xfe" + struct.pack(">H", 10) + b"\0\0" + MAGIC_BYTES + b"\0\0"
    out = image[:2] + com + image[2:]
    assert (24 + out.index(MAGIC_BYTES)) % 4 == 0
    return out


def base_pack(seed: int = SEED) -> Pack:
    rng = np.random.default_rng(seed)
    images = [_jpeg(rng) for _ in range(N_RECORDS)]
    images[3] = _with_aligned_magic(images[3])
    return build_pack([_payload(i, img) for i, img in enumerate(images)])


# -- mutations ------------------------------------------------------------------------------------

@dataclass
class Case:
    """One damaged input: files, what a reader may deliver, and a description."""

    name: str
    rec: bytes
    idx: Optional[bytes]            # None: no .idx file at all
    allow: str                      # exact | some:<r1,r2..> | prefix:<k>
    payloads: List[bytes] = field(default_factory=list)  # what "exact" means (file order)
    listed: Optional[List[int]] = None  # keys an .idx still lists when it lost lines


def _region(pack: Pack, pos: int) -> Tuple[str, int]:
    """Where byte ``pos`` of the .rec lies: ('frame'|'payload'|'pad', record)."""
    for r, (o, e) in enumerate(zip(pack.offsets, pack.ends)):
        if o <= pos < e:
            if pos < o + 8:
                return "frame", r
            return ("payload", r) if pos < o + 8 + len(pack.payloads[r]) else ("pad", r)
    return "end", -1


def _allow(pack: Pack, positions) -> str:
    """'some:r1,r2' when only the insides of payloads changed (undetectable without a
    checksum: those records may differ), 'exact' when any framing byte changed."""
    regions = {_region(pack, p) for p in positions}
    if not {k for k, _ in regions} <= {"payload", "pad"}:
        return "exact"
    touched = sorted({r for k, r in regions if k == "payload"})
    return "some:" + ",".join(map(str, touched)) if touched else "exact"


def _lines(idx: bytes) -> List[bytes]:
    return idx.splitlines(keepends=True)


def _sof_claiming(image: bytes, h: int, w: int) -> bytes:
    """A JPEG whose SOF0 header claims h x w pixels."""
    b = bytearray(image)
    i = b.find(b"\xff\xc0")
    if i < 0:
        i = b.find(b"\xff\xc2")
    b[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


def mutate(pack: Pack, rng: random.Random) -> Case:
    """One seeded damage of the base pack."""
    rec, idx, n = pack.rec, pack.idx, len(pack.payloads)
    P = list(pack.payloads)
    kind = rng.choice([
        "flip", "flip", "flip", "truncate", "cut_boundary", "cut_boundary_no_idx", "delete",
        "insert", "zero", "lrec_huge", "lrec_small", "cflag", "no_idx", "idx_drop_first",
        "idx_drop_middle", "idx_drop_last", "idx_dup_line", "idx_offset_shift",
        "idx_offset_far", "idx_offset_neg", "idx_swap", "idx_dup_key", "idx_garbage",
        "idx_empty", "idx_cut_midline", "idx_crlf", "pl_short", "pl_flag_huge",
        "pl_bomb", "pl_garbage", "pl_truncated_jpeg", "pl_empty", "pl_png_garbage",
        "pl_flag_labels"])
    r = rng.randrange(n)
    if kind == "flip":
        b = bytearray(rec)
        pos = [rng.randrange(len(b)) for _ in range(rng.randint(1, 4))]
        for p in pos:
            b[p] ^= 1 << rng.randrange(8)
        return Case(f"flip {sorted(pos)}", bytes(b), idx, _allow(pack, pos), P)
    if kind == "truncate":
        cut = rng.randrange(1, len(rec))
        if cut in pack.offsets:
            cut += 1
        return Case(f"rec cut at byte {cut}", rec[:cut], idx, "exact", P)
    if kind == "cut_boundary":
        k = rng.randrange(1, n)
        return Case(f"rec cut at record boundary {k} with .idx", rec[:pack.offsets[k]], idx,
                    "exact:prefix:%d" % k, P)
    if kind == "cut_boundary_no_idx":
        k = rng.randrange(1, n)
        return Case(f"rec cut at record boundary {k}, no .idx", rec[:pack.offsets[k]], None,
                    "prefix:%d" % k, P)
    if kind == "delete":
        a = rng.randrange(len(rec) - 1)
        b_ = min(len(rec), a + rng.randint(1, 64))
        return Case(f"bytes [{a}, {b_}) deleted", rec[:a] + rec[b_:], idx, "exact", P)
    if kind == "insert":
        a = rng.randrange(len(rec))
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        return Case(f"{len(junk)} bytes inserted at {a}", rec[:a] + junk + rec[a:], idx,
                    "exact", P)
    if kind == "zero":
        a = rng.randrange(len(rec))
        ln = rng.randint(4, 64)
        b = bytearray(rec)
        b[a:a + ln] = bytes(len(b[a:a + ln]))
        return Case(f"bytes [{a}, {a + ln}) zeroed", bytes(b), idx,
                    _allow(pack, range(a, min(len(rec), a + ln))), P)
    if kind in ("lrec_huge", "lrec_small", "cflag"):
        b = bytearray(rec)
        o = pack.offsets[r]
        (lrec,) = struct.unpack_from("<I", b, o + 4)
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        if kind == "lrec_huge":
            length = (1 << 29) - 1 - rng.randrange(64)
        elif kind == "lrec_small":
            length = max(0, length - rng.randint(1, 200))
        else:
            cflag = rng.choice([1, 2, 3])
        struct.pack_into("<I", b, o + 4, (cflag << 29) | length)
        return Case(f"record {r} {kind} (cflag {cflag}, length {length})", bytes(b), idx,
                    "exact", P)
    lines = _lines(idx)
    if kind == "no_idx":
        return Case("no .idx", rec, None, "exact", P)
    if kind == "idx_drop_first":
        return Case(".idx without its first line", rec, b"".join(lines[1:]), "exact", P)
    if kind == "idx_drop_middle":
        i = rng.randrange(1, n - 1)
        return Case(f".idx without line {i + 1}", rec, b"".join(lines[:i] + lines[i + 1:]),
                    "exact", P, [k for k in range(n) if k != i])
    if kind == "idx_drop_last":
        return Case(".idx without its last line", rec, b"".join(lines[:-1]), "exact", P,
                    list(range(n - 1)))
    if kind == "idx_dup_line":
        i = rng.randrange(n)
        return Case(f".idx line {i + 1} twice", rec, b"".join(lines + [lines[i]]), "exact", P)
    if kind in ("idx_offset_shift", "idx_offset_far", "idx_offset_neg"):
        i = rng.randrange(n)
        k, off = lines[i].split(b"\t")
        new = {"idx_offset_shift": int(off) + rng.choice([-8, -4, 4, 8, 12]),
               "idx_offset_far": rng.choice([len(rec) + 4, 2**31, 2**62, 2**63 - 4]),
               "idx_offset_neg": -4}[kind]
        lines[i] = k + b"\t%d\n" % new
        return Case(f".idx line {i + 1} offset {new}", rec, b"".join(lines), "exact", P)
    if kind == "idx_swap":
        i, j = rng.sample(range(n), 2)
        lines[i], lines[j] = lines[j], lines[i]
        return Case(f".idx lines {i + 1} and {j + 1} swapped", rec, b"".join(lines),
                    "exact", P)
    if kind == "idx_dup_key":
        i, j = rng.sample(range(n), 2)
        lines[j] = lines[i].split(b"\t")[0] + b"\t" + lines[j].split(b"\t")[1]
        return Case(f".idx line {j + 1} reuses the key of line {i + 1}", rec, b"".join(lines),
                    "exact", P)
    if kind == "idx_garbage":
        i = rng.randrange(n)
        lines[i] = rng.choice([b"x\ty\n", b"1 2 3\n", b"\xff\xfe\t0\n", b"\t\n", b"1e3\t0\n"])
        listed = [k for k in range(n) if k != i] if i and lines[i] == b"\t\n" else None
        return Case(f".idx line {i + 1} garbage {lines[i]!r}", rec, b"".join(lines), "exact", P,
                    listed)  # a blank line is skipped: the .idx then lists a subset
    if kind == "idx_empty":
        return Case("empty .idx", rec, b"", "exact", P)
    if kind == "idx_cut_midline":
        cut = len(idx) - rng.randint(2, 4)
        return Case(f".idx cut at byte {cut}", rec, idx[:cut], "exact", P)
    if kind == "idx_crlf":
        return Case(".idx with CRLF", rec, idx.replace(b"\n", b"\r\n"), "exact", P)
    # payload-level damage: valid framing and a matching .idx around a bad record
    rng_np = np.random.default_rng(rng.randrange(2**32))
    img = P[r][24:]
    from cloudrec.format.irheader import IRHeader, pack as irpack
    if kind == "pl_short":
        bad = P[r][:rng.randint(0, 23)]
    elif kind == "pl_flag_huge":
        bad = struct.pack("<I", rng.choice([1000, 2**31, 2**32 - 1])) + P[r][4:]
    elif kind == "pl_flag_labels":
        bad = irpack(IRHeader(0, [1.0, 2.0, 3.0], r, 0), img)
    elif kind == "pl_bomb":
        bad = P[r][:24] + _sof_claiming(img, 60000, 60000)
    elif kind == "pl_garbage":
        bad = P[r][:24] + rng_np.bytes(rng.randint(0, 300))
    elif kind == "pl_png_garbage":
        bad = P[r][:24] + b"\x89PNG\r\n\x1a\n" + rng_np.bytes(rng.randint(0, 100))
    elif kind == "pl_truncated_jpeg":
        bad = P[r][:24 + rng.randint(2, len(img) - 2)]
    else:
        bad = b""
    P[r] = bad
    newpack = build_pack(P)
    return Case(f"record {r} payload {kind} ({len(bad)} bytes)", newpack.rec, newpack.idx,
                "some:%d" % r, P)


# -- readers --------------------------------------------------------------------------------------

def _sig(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else
                 repr(p).encode() if not isinstance(p, (bytes, bytearray)) else bytes(p))
        h.update(b"|")
    return h.hexdigest()[:16]


def read_mxrecordio(rec: str, idx: Optional[str]) -> List[str]:
    from cloudrec.recordio import MXRecordIO
    with MXRecordIO(rec, "r") as r:
        return [_sig(p) for p in r]


def read_mxindexed(rec: str, idx: Optional[str]) -> List[str]:
    from cloudrec.recordio import MXIndexedRecordIO
    with MXIndexedRecordIO(idx or rec[:-4] + ".idx", rec, "r") as r:
        return [_sig(r.read_idx(k)) for k in r.keys]


def _iri(rec: str, idx: Optional[str], with_idx: bool) -> List[str]:
    from cloudrec.iterators import ImageRecordIter
    kw = {"path_imgidx": idx} if with_idx and idx else {}
    if with_idx and not idx:
        kw = {"path_imgidx": rec[:-4] + ".idx"}
    it = ImageRecordIter(path_imgrec=rec, data_shape=(3, 8, 8), batch_size=2,
                         preprocess_threads=1, **kw)
    out = []
    try:
        for b in it:
            data, label = np.asarray(b.data[0]), np.asarray(b.label[0])
            for j in range(data.shape[0] - int(b.pad)):
                out.append(_sig(np.round(label[j], 4), data[j]))
    finally:
        if hasattr(it, "close"):
            it.close()
    return out


def read_iri_idx(rec, idx):
    return _iri(rec, idx, True)


def read_iri_noidx(rec, idx):
    return _iri(rec, idx, False)


def read_image_iter(rec: str, idx: Optional[str]) -> List[str]:
    from cloudrec.iterators import ImageIter
    it = ImageIter(batch_size=2, data_shape=(3, 8, 8), path_imgrec=rec,
                   path_imgidx=idx or rec[:-4] + ".idx")
    out = []
    for b in it:
        data, label = np.asarray(b.data[0]), np.asarray(b.label[0])
        for j in range(data.shape[0] - int(b.pad)):
            out.append(_sig(np.round(label[j], 4), data[j]))
    return out


def read_torch_iterable(rec: str, idx: Optional[str]) -> List[str]:
    from cloudrec.torch import RecordIterableDataset
    ds = RecordIterableDataset(rec, batch_size=2)
    out = []
    for b in ds:
        imgs, labels = b["data"]
        for j in range(len(b["ids"])):
            if not bool(b["is_pad"][j]):
                out.append(_sig(np.round(labels[j].numpy(), 4), imgs[j].numpy()))
    return out


def read_torch_indexed(rec: str, idx: Optional[str]) -> List[str]:
    from cloudrec.torch import IndexedRecordDataset
    ds = IndexedRecordDataset(idx or rec[:-4] + ".idx", rec)
    return [_sig(np.round(lab.numpy(), 4), img.numpy()) for img, lab in
            (ds[i] for i in range(len(ds)))]


def read_inspect(rec: str, idx: Optional[str]) -> List[str]:
    from cloudrec.tools.inspect import inspect
    s = inspect(rec, sample=0)
    if s.errors:  # reported, with file and record: as good as an exception
        raise _Reported("; ".join(s.errors[:2]))
    return [_sig(k) for k, v in sorted(s.label_histogram.items()) for _ in range(v)]


def read_index(rec: str, idx: Optional[str]) -> List[str]:
    from cloudrec.tools.index import rebuild_index
    data, n, _ = rebuild_index(rec)
    return [_sig(line.split(b"\t")[1]) for line in data.splitlines()]  # the offsets


class _Reported(CloudrecError):
    """inspect's per-record problems list, treated as a clean error."""


READERS: Dict[str, Callable[[str, Optional[str]], List[str]]] = {
    "MXRecordIO": read_mxrecordio, "MXIndexedRecordIO": read_mxindexed,
    "ImageRecordIter+idx": read_iri_idx, "ImageRecordIter": read_iri_noidx,
    "ImageIter": read_image_iter, "RecordIterableDataset": read_torch_iterable,
    "IndexedRecordDataset": read_torch_indexed, "inspect": read_inspect, "index": read_index,
}
# readers that see every record of the .rec with or without an .idx, and the ones that
# need an .idx (for those, "prefix" cases without .idx must raise)
NEEDS_IDX = {"MXIndexedRecordIO", "ImageRecordIter+idx", "ImageIter", "IndexedRecordDataset"}
# readers for which an .idx listing a subset of the records is valid input (MXNet's ImageIter)
SUBSET_OK = {"ImageIter"}


def got_equal(got: List[str], want: List[str]) -> bool:
    return sorted(got) == sorted(want)


# readers that never look at an .idx (MXNet's sequential MXRecordIO; index rebuilds one):
# for them a .rec cut at a record boundary is the undetectable case even with an .idx
IGNORES_IDX = {"MXRecordIO", "index"}


# -- the oracle -------------------------------------------------------------------------------------

@dataclass
class Finding:
    reader: str
    case: str
    what: str          # "foreign <Type>: msg" or "silent: ..."
    where: str         # innermost cloudrec frame "path:line in func"


def _innermost_cloudrec_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    best = ""
    for f in frames:
        p = f.filename.replace(os.sep, "/")
        if "/cloudrec/" in p and "/tests/" not in p:
            best = f"cloudrec/{p.rsplit('/cloudrec/', 1)[1]}:{f.lineno} in {f.name}"
    return best or "(outside cloudrec)"


def _check(reader: str, case: Case, got: List[str], baseline: Dict[str, List[str]],
           truth: Dict[str, List[str]]) -> Optional[str]:
    """None when ``got`` is allowed for this case, else a description of the wrong result."""
    want = truth[reader]
    if case.allow == "exact":
        if sorted(got) == sorted(want):
            return None
        return f"silent: {len(got)} records delivered, {len(want)} expected, output differs"
    if case.allow.startswith("some:"):
        damaged = len(case.allow[5:].split(","))
        if len(got) != len(want):
            return f"silent: {len(got)} records delivered, {len(want)} expected"
        diff = collections.Counter(want) - collections.Counter(got)
        if sum(diff.values()) <= damaged:
            return None
        return (f"silent: {sum(diff.values())} records differ (at most the {damaged} damaged "
                "may)")
    if case.allow.startswith("prefix:"):
        k = int(case.allow.split(":")[1])
        ok = sorted(got) == sorted(want)  # want: this reader on a .rec of exactly k records
        return None if ok else f"silent: {len(got)} records, a prefix of {k} expected"
    raise AssertionError(case.allow)


def run_campaign(n_cases: int, seed: int = SEED, workdir: Optional[str] = None,
                 readers: Optional[List[str]] = None) -> Dict[str, object]:
    """Run ``n_cases`` seeded cases over every reader; return counts and findings."""
    import cv2
    cv2.setNumThreads(1)
    readers = readers or list(READERS)
    pack = base_pack(seed)
    rng = random.Random(seed)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="cloudrec-fuzz-"))
    findings: List[Finding] = []
    counts = collections.Counter()
    slowest = 0.0
    t0 = time.perf_counter()

    def files(case_no: int, rec: bytes, idx: Optional[bytes]) -> Tuple[str, Optional[str]]:
        d = tmp / f"c{case_no:05d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "a.rec").write_bytes(rec)
        if idx is not None:
            (d / "a.idx").write_bytes(idx)
        return str(d / "a.rec"), (str(d / "a.idx") if idx is not None else None)

    def run_all(rec: str, idx: Optional[str]) -> Dict[str, object]:
        out: Dict[str, object] = {}
        nonlocal slowest
        for name in readers:
            t1 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    out[name] = READERS[name](rec, idx)
                except BaseException as exc:  # noqa: B902 - the point is to classify it
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    out[name] = exc
            dt = time.perf_counter() - t1
            slowest = max(slowest, dt)
            if dt > SLOW_RUN_S:
                counts["slow_runs"] += 1
        return out

    base_rec, base_idx = files(0, pack.rec, pack.idx)
    baseline = run_all(base_rec, base_idx)
    for name, v in baseline.items():
        assert isinstance(v, list) and len(v) > 0, f"{name} fails on the intact pack: {v!r}"
    for case_no in range(1, n_cases + 1):
        case = mutate(pack, rng)
        rec, idx = files(case_no, case.rec, case.idx)
        truth = baseline
        if "prefix:" in case.allow:  # what each reader gives on the true prefix, no .idx
            k = int(case.allow.rsplit(":", 1)[1])
            prefix = build_pack(pack.payloads[:k])
            truth = dict(baseline)
            truth.update({name: v for name, v in run_all(*files(200000 + case_no, prefix.rec,
                                                                 None)).items()
                          if isinstance(v, list)})
        if case.payloads != pack.payloads:  # payload-level: raw readers see the new bytes
            truth = dict(baseline)
            truth["MXRecordIO"] = truth["MXIndexedRecordIO"] = [_sig(p) for p in case.payloads]
            truth["index"] = [_sig(b"%d" % o) for o in build_pack(case.payloads).offsets]
        results = run_all(rec, idx)
        counts["cases"] += 1
        for name, res in results.items():
            counts["runs"] += 1
            if isinstance(res, CloudrecError):
                counts["clean_errors"] += 1
                continue
            if isinstance(res, BaseException):
                counts["foreign"] += 1
                findings.append(Finding(name, case.name,
                                        f"foreign {type(res).__module__}.{type(res).__name__}: "
                                        f"{str(res)[:160]}", _innermost_cloudrec_frame(res)))
                continue
            allow = case.allow
            if name in SUBSET_OK and case.listed is not None:
                # MXNet's ImageIter reads the records its .idx lists: a subset is valid
                if got_equal(res, [baseline[name][k] for k in case.listed]):
                    counts["ok"] += 1
                    continue
            if allow.startswith("exact:prefix:"):  # cut at a boundary next to its .idx
                allow = allow[6:] if name in IGNORES_IDX else "exact"
            if allow.startswith("prefix:") and name in NEEDS_IDX:
                allow = "exact"  # these need the .idx: with none they must refuse
            if name == "index" and allow.startswith("some:") and case.payloads == pack.payloads:
                allow = "exact"  # a payload byte never moves a record head
            if name in ("MXRecordIO", "MXIndexedRecordIO", "index") and \
                    case.payloads != pack.payloads:
                allow = "exact"  # raw readers: the re-framed bytes are the truth
            problem = _check(name, Case(case.name, b"", None, allow, []), res,
                             baseline, truth)
            if problem:
                counts["silent_wrong"] += 1
                findings.append(Finding(name, case.name, problem, _silent_owner(name)))
            else:
                counts["ok"] += 1
    return {"seed": seed, "cases": counts["cases"], "reader_runs": counts["runs"],
            "clean_errors": counts["clean_errors"], "accepted_results": counts["ok"],
            "foreign_exceptions": counts["foreign"], "silent_wrong": counts["silent_wrong"],
            "runs_over_%ds" % SLOW_RUN_S: counts["slow_runs"],
            "slowest_run_seconds": round(slowest, 3),
            "seconds": round(time.perf_counter() - t0, 1), "readers": readers,
            "findings": [f.__dict__ for f in findings]}


def _silent_owner(reader: str) -> str:
    return {"RecordIterableDataset": "cloudrec/torch.py (via cloudrec/reader/fetch.py)",
            "IndexedRecordDataset": "cloudrec/torch.py", "ImageIter": "cloudrec/iterators/",
            "ImageRecordIter": "cloudrec/iterators/", "ImageRecordIter+idx": "cloudrec/iterators/",
            "MXRecordIO": "cloudrec/recordio.py", "MXIndexedRecordIO": "cloudrec/recordio.py",
            "inspect": "cloudrec/tools/inspect.py", "index": "cloudrec/tools/index.py"}[reader]


# -- the tests --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return run_campaign(DEFAULT_CASES, SEED, str(tmp_path_factory.mktemp("fuzz")))


def _report(findings) -> str:
    lines = collections.Counter(f"{f['reader']}: {f['what'][:90]} @ {f['where']}"
                                for f in findings)
    return "\n".join(f"{n}x {k}" for k, n in lines.most_common(25))


def test_fuzz_every_reader(campaign):
    """No reader raises a foreign exception or returns a silently wrong result on any case."""
    print(json.dumps({k: v for k, v in campaign.items() if k != "findings"}))
    assert campaign["cases"] == DEFAULT_CASES and campaign["reader_runs"] == \
        DEFAULT_CASES * len(READERS)
    assert not campaign["findings"], _report(campaign["findings"])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=600)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--json", default=None, help="write the figures here")
    ns = ap.parse_args(argv)
    res = run_campaign(ns.cases, ns.seed)
    res["command"] = "python tests/test_fuzz_readers.py " + " ".join(argv or sys.argv[1:])
    print(json.dumps({k: v for k, v in res.items() if k != "findings"}, indent=1))
    print(_report(res["findings"]))
    if ns.json:
        Path(ns.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
