"""A cache download's progress files, shared by the processes of one node.

``<key>.part`` says which pieces of a running download are in its temp file,
so the node's other processes can stream the shard meanwhile; ``<key>.want``
carries back the ranges they wait for.  When the downloading process dies
(killed, or a DataLoader worker torn down mid-download), the process that
takes the key's lock next continues from the pieces already written
(:func:`partial_download`) instead of fetching the whole shard again: the
header names the kernel's boot, and only a crash of the kernel (a new boot)
can lose pages that a process wrote, so a progress file of this boot tells
the truth about its temp file.
"""
from __future__ import annotations

import os
import struct
from typing import List, NamedTuple, Optional, Tuple

from cloudrec.storage.cache_files import BOOT_ID, TMP_FILE, write_all

__all__ = ["ProgressFile", "read_progress", "ask_for", "partial_download"]

Span = Tuple[int, int]


def ask_for(want_path: str, ranges: List[Span]) -> bool:
    """Append ``ranges`` to a running download's want file; False when there is none yet."""
    if not ranges:
        return True
    try:
        fd = os.open(want_path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return False
    try:
        flat = [int(x) for ab in ranges for x in ab]
        os.write(fd, struct.pack(f"<{len(flat)}q", *flat))  # one O_APPEND write
    finally:
        os.close(fd)
    return True


class ProgressFile:
    """``<key>.part`` and ``<key>.want`` of one download (see the module docstring).

    The part file is one header line (shard size, piece size, the temp file's
    name, the boot id), then one byte per piece of ``piece`` bytes (the last
    may be shorter), ``0`` or ``1``, set in place by ``pwrite`` after the piece
    itself is written.  The want file is appended to by the followers (pairs of
    8-byte little-endian offsets, ``[start, end)``) and read by the downloader."""

    def __init__(self, tmp: str, size: int, piece: int) -> None:
        folder, name = os.path.split(tmp)
        key = name.split(".tmp.")[0]
        self.path = os.path.join(folder, key + ".part")
        self.want_path = os.path.join(folder, key + ".want")
        self.size, self.piece = size, piece
        self._want_fd = os.open(self.want_path, os.O_RDONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._want_pos = 0
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        head = f"{size:x} {piece:x} {name} {BOOT_ID or 0:x}\n".encode()
        self._base = len(head)
        write_all(self.fd, head + b"0" * _pieces(size, piece), 0)

    def advance(self, start: int, end: int) -> None:
        """``[start, end)`` is written (``start`` on a piece boundary; ``end`` on one or at
        the shard's end)."""
        if self.fd < 0 or start % self.piece:
            return
        first = start // self.piece
        last = _pieces(end, self.piece) if end >= self.size else end // self.piece
        if last > first:
            write_all(self.fd, b"1" * (last - first), self._base + first)

    def wants(self) -> List[Span]:
        """Ranges the followers asked for since the last call."""
        if self._want_fd < 0:
            return []
        data = os.pread(self._want_fd, 1 << 16, self._want_pos)
        n = len(data) // 16
        self._want_pos += n * 16
        flat = struct.unpack(f"<{2 * n}q", data[:n * 16]) if n else ()
        return list(zip(flat[0::2], flat[1::2]))

    def close(self) -> None:
        for name in ("fd", "_want_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def _pieces(size: int, piece: int) -> int:
    return -(-size // piece) if size > 0 else 0


class _Progress(NamedTuple):
    size: int
    boot: int
    done: List[Span]   # runs of written pieces, sorted
    tmp: str           # the temp file's path


def _parse(part_path: str) -> Optional[_Progress]:
    try:
        with open(part_path, "rb") as fh:
            data = fh.read()
        head, _, bits = data.partition(b"\n")
        fields = head.split(b" ")
        size, piece = int(fields[0], 16), int(fields[1], 16)
        name = fields[2].decode()
        boot = int(fields[3], 16) if len(fields) > 3 else 0
        if not TMP_FILE.match(name) or piece <= 0:
            return None
        n = _pieces(size, piece)
        if len(bits) < n:
            return None
        done = []   # runs of written pieces, found with bytes.find (a follower polls often)
        i = bits.find(b"1", 0, n)
        while i >= 0:
            j = bits.find(b"0", i, n)
            j = n if j < 0 else j
            done.append((i * piece, min(size, j * piece)))
            i = bits.find(b"1", j, n)
        return _Progress(size, boot, done, os.path.join(os.path.dirname(part_path), name))
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def read_progress(part_path: str) -> Optional[Tuple[List[Span], str]]:
    """(runs of written pieces as sorted ``[(start, end)]``, temp file path) of a download
    in progress, or None (no download, or its progress file is being written)."""
    got = _parse(part_path)
    return None if got is None else (got.done, got.tmp)


def partial_download(part_path: str, size: int) -> Optional[Tuple[str, List[Span]]]:
    """(temp file, runs on disk) a dead download of ``size`` bytes left behind in this
    boot, or None (none, nothing written yet, another boot, or no boot id to tell).
    Call with the key's lock held: then no live process writes that temp file."""
    got = _parse(part_path)
    if got is None or BOOT_ID is None or got.boot != BOOT_ID or got.size != size \
            or not got.done:
        return None
    try:
        if os.stat(got.tmp).st_size != size:   # reserved at full size when it began
            return None
    except OSError:
        return None
    return got.tmp, got.done
