"""``cloudrec index FILE.rec``: rebuild a missing or damaged `.idx` from the `.rec`.

The `.rec` is read in chunks with ranged reads (local or any URL); record
heads are found with :func:`find_record_heads` and every record is checked to
be complete and to start exactly where the previous one ended, so a corrupt
or truncated file gives a clear error with the offset instead of a wrong
index.  Keys are the IRHeader ids (im2rec's keys) or record ordinals.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from cloudrec.errors import IndexFileError, RecordIOError
from cloudrec.format.framing import find_record_heads, read_record_at
from cloudrec.format.idx import format_idx
from cloudrec.format.irheader import HEADER_SIZE
from cloudrec.recordio import storage_errors
from cloudrec.storage.fs import resolve

DEFAULT_CHUNK = 8 << 20
KEY_MODES = ("auto", "id", "seq")


@dataclass
class ScannedRecord:
    """A record found by the scan: where it starts and the start of its payload."""

    offset: int
    length: int          # logical payload length
    head: bytes          # first HEADER_SIZE bytes of the payload (fewer if it is shorter)


def _is_truncation(exc: RecordIOError) -> bool:
    msg = str(exc)
    return "truncated" in msg


def scan_records(read: Callable[[int, int], bytes], size: int, url: Optional[str] = None,
                 chunk_size: int = DEFAULT_CHUNK) -> Iterator[ScannedRecord]:
    """Yield every record of a `.rec` of ``size`` bytes in file order.

    ``read(start, end)`` returns those bytes.  Raises :class:`RecordIOError`
    naming ``url`` and the offset when bytes between records are not a record
    (garbage, a bad part sequence) or the file ends inside a record.
    """
    chunk_size = max(4096, chunk_size - chunk_size % 4)
    buf = b""
    base = 0      # absolute offset of buf[0]
    pos = 0       # where the next record must start
    want = chunk_size
    while True:
        have_end = base + len(buf)
        if have_end < size:
            buf += read(have_end, min(size, have_end + want))
        eof = base + len(buf) >= size
        progressed = False
        for h in find_record_heads(buf, base_offset=base).tolist():
            if h < pos:
                continue
            if h != pos:
                raise RecordIOError(f"{h - pos} bytes between records are not a record "
                                    f"(next record head at {h})", url, pos)
            try:
                payload, nxt = read_record_at(buf, h - base, url=url, base_offset=base)
            except RecordIOError as exc:
                if not eof and _is_truncation(exc):
                    break  # the record continues past the buffer: read more
                raise
            yield ScannedRecord(h, len(payload), bytes(payload[:HEADER_SIZE]))
            pos = base + nxt
            progressed = True
        if eof:
            if pos < size:  # let the framing layer say precisely what is wrong there
                read_record_at(buf, pos - base, url=url, base_offset=base)
                raise RecordIOError("bytes at the end of the file are not a record", url, pos)
            return
        buf = buf[pos - base:]
        base = pos
        want = chunk_size if progressed else want * 2  # a big record: read more at once


def keys_for(records: List[ScannedRecord], mode: str = "auto", url: Optional[str] = None
             ) -> Tuple[np.ndarray, str]:
    """The `.idx` keys: IRHeader ids (``id``), ordinals (``seq``), or ``auto``:
    ids when every record has a header and the ids are unique, else ordinals."""
    if mode not in KEY_MODES:
        raise ValueError(f"key mode must be one of {KEY_MODES}, got {mode!r}")
    seq = np.arange(len(records), dtype=np.int64)
    if mode == "seq":
        return seq, "seq"
    short = [r for r in records if len(r.head) < HEADER_SIZE]
    ids = np.array([int.from_bytes(r.head[8:16], "little") for r in records
                    if len(r.head) >= HEADER_SIZE], dtype=np.uint64)
    if mode == "id":
        if short:
            raise RecordIOError(f"record of {short[0].length} bytes has no IRHeader, so no id "
                                f"(use --key seq)", url, short[0].offset)
        return ids, "id"
    if short or len(np.unique(ids)) != len(ids):
        return seq, "seq"
    return ids, "id"


def rebuild_index(rec_url: str, storage_options: Optional[Dict[str, Any]] = None,
                  key: str = "auto", chunk_size: int = DEFAULT_CHUNK
                  ) -> Tuple[bytes, int, str]:
    """Scan ``rec_url``; return ``(idx bytes, record count, key mode used)``."""
    from cloudrec.storage.ranged import make_range_reader

    fs, path = resolve(rec_url, storage_options)
    with storage_errors(rec_url, "stat the RecordIO file"):  # missing: StorageNotFound
        size = int(fs.size(path))
    with make_range_reader(fs, concurrency=2) as reader:
        records = list(scan_records(lambda s, e: reader.read(path, s, e, rec_url), size, rec_url,
                                    chunk_size))
    if not records:
        raise RecordIOError("no records found", rec_url, 0)
    keys, used = keys_for(records, key, rec_url)
    return format_idx(keys.tolist(), [r.offset for r in records]), len(records), used


def default_idx_url(rec_url: str) -> str:
    """``x.rec`` -> ``x.idx`` (else ``x.idx`` appended)."""
    return rec_url[:-4] + ".idx" if rec_url.endswith(".rec") else rec_url + ".idx"


def write_atomic(url: str, data: bytes, storage_options: Optional[Dict[str, Any]] = None) -> None:
    """Write to a temporary name next to ``url`` and rename it into place."""
    from cloudrec.tools.packing import write_bytes_atomic

    write_bytes_atomic(url, data, storage_options)


def run(ns: argparse.Namespace) -> int:
    """``cloudrec index``: rebuild (or with --check, verify) the `.idx` of each `.rec`."""
    if getattr(ns, "table", None) and ns.check:   # audit a table against its shards
        from cloudrec.dataset.table_check import check_table
        from cloudrec.storage.redact import redact_text
        why = check_table(ns.rec, ns.table, ns.storage_options)
        for line in why:
            print(f"{redact_text(ns.table)}: {redact_text(line)}")
        if not why:
            print(f"{redact_text(ns.table)}: matches its shards")
        return 1 if why else 0
    if getattr(ns, "table", None):  # --table: the compact dataset table instead of .idx files
        from cloudrec.dataset.table_file import write_table
        tf = write_table(ns.rec, ns.table, ns.storage_options, crc=ns.crc)
        print(f"wrote {ns.table}: {len(tf.table)} records of {len(tf.shards)} shard(s)"
              + (", with record CRCs" if tf.table.crc is not None else ""))
        return 0
    if getattr(ns, "crc", False):
        raise IndexFileError("--crc goes with --table OUT (record CRCs live in the dataset table)",
                             ns.rec[0])
    status = 0
    for rec_url in ns.rec:
        out = ns.out if ns.out and len(ns.rec) == 1 else default_idx_url(rec_url)
        data, n, used = rebuild_index(rec_url, ns.storage_options, ns.key, ns.chunk_size)
        fs, opath = resolve(out, ns.storage_options)
        with storage_errors(out, "read the existing index"):
            exists = fs.exists(opath)
            same = exists and fs.cat_file(opath) == data if ns.check else False
        if ns.check:
            print(f"{out}: {'matches' if same else 'missing' if not exists else 'DIFFERS'} "
                  f"({n} records in {rec_url}, keys by {used})")
            status = status or (0 if same else 1)
            continue
        if exists and not ns.force:
            raise IndexFileError("index exists; pass --force to replace it (or --out X.idx)", out)
        write_atomic(out, data, ns.storage_options)
        print(f"wrote {out}: {n} records, keys by {used}")
    return status


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rec", nargs="+", help=".rec file(s): path or URL")
    p.add_argument("--out", default=None, help="where to write the .idx (one .rec only; "
                                                "default: next to the .rec)")
    p.add_argument("--key", choices=KEY_MODES, default="auto",
                   help="keys: IRHeader id (im2rec's keys), record ordinal, or auto (id when "
                        "every record has a header and ids are unique)")
    p.add_argument("--force", action="store_true", help="replace an existing .idx")
    p.add_argument("--check", action="store_true",
                   help="only compare the rebuilt index with the existing one (exit 1 if not "
                        "equal); with --table OUT, audit that table against the shards (every "
                        ".idx read again, and every record's CRC32 if the table keeps them)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK,
                   help="bytes per ranged read while scanning")
    p.add_argument("--table", default=None, metavar="OUT",
                   help="write the compact dataset table of these shards (their .idx files "
                        "read) to OUT instead; open_dataset(..., table=OUT) maps it")
    p.add_argument("--crc", action="store_true",
                   help="with --table: also read every shard once and store each record's "
                        "CRC32 in the table; every later read of a record is checked against it")
    p.add_argument("--storage-options", type=__import__("json").loads, default=None,
                   help="JSON dict of fsspec storage options")


def register(subparsers) -> None:
    """Add ``cloudrec index`` to the ``cloudrec`` command."""
    p = subparsers.add_parser("index", help="rebuild a missing or damaged .idx from its .rec",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="cloudrec-index")
    add_arguments(p)
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback")
    ns = p.parse_args(argv)
    try:
        return run(ns)
    except Exception as exc:  # one line, naming the extra or the foreign error type
        from cloudrec.tools.cli_support import report_error
        return report_error("cloudrec index", exc, ns, command="index")


if __name__ == "__main__":
    sys.exit(main())
