"""Pure-bytes formats of MXNet RecordIO: framing, IRHeader, `.idx`, `.lst`.

Nothing here touches a file: functions take and return bytes, numpy arrays
and strings, so every other layer (and every test) can use them alone.
"""
from cloudrec.format.framing import (
    MAGIC, MAGIC_BYTES, MAX_RECORD_LENGTH, CFLAG_FULL, CFLAG_START, CFLAG_MIDDLE, CFLAG_END,
    ceil4, encode_record, decode_record, read_record_at, iter_records, find_record_heads,
    encoded_length,
)
from cloudrec.format.irheader import IRHeader, pack, unpack, unpack_header, HEADER_SIZE
from cloudrec.format.idx import parse_idx, format_idx, format_idx_line, record_lengths
from cloudrec.format.lst import ListEntry, parse_lst, parse_lst_line, format_lst_line

__all__ = [
    "MAGIC", "MAGIC_BYTES", "MAX_RECORD_LENGTH", "CFLAG_FULL", "CFLAG_START", "CFLAG_MIDDLE",
    "CFLAG_END", "ceil4", "encode_record", "decode_record", "read_record_at", "iter_records",
    "find_record_heads", "encoded_length", "IRHeader", "pack", "unpack", "unpack_header",
    "HEADER_SIZE", "parse_idx", "format_idx", "format_idx_line", "record_lengths", "ListEntry",
    "parse_lst", "parse_lst_line", "format_lst_line",
]
