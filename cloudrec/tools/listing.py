"""Image lists (`.lst`) the way MXNet's ``tools/im2rec.py --list`` makes them.

Walking a folder (local or any fsspec URL), labelling by folder, MXNet's
deterministic shuffle (``random.seed(100); random.shuffle``), chunking and
train/val/test splits, and reading a `.lst` back for packing.  Only the walk
touches storage; everything else is pure.
"""
from __future__ import annotations

import os
import posixpath
import random
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from cloudrec.errors import ImageListError
from cloudrec.format.lst import ListEntry, format_lst_line, parse_lst_line

DEFAULT_EXTS = (".jpeg", ".jpg", ".png")
SHUFFLE_SEED = 100  # MXNet's im2rec.py: random.seed(100)


@dataclass(frozen=True)
class Folder:
    """A labelled folder: its path relative to the root ('.' for the root) and label."""

    relpath: str
    label: int


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def _suffix_ok(name: str, exts: Sequence[str]) -> bool:
    # MXNet lower-cases the file's suffix only, so upper-case --exts never match.
    return os.path.splitext(name)[1].lower() in exts


def report_skip(message: str) -> None:
    """Default reporter of entries the walk leaves out: one ``im2rec:`` line on stderr."""
    print(f"im2rec: {message}", file=sys.stderr)


def _utf8_name(name: str) -> bool:
    """Can this (surrogate-escaped) file name be written to a UTF-8 `.lst`?"""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk_local(root: str, report: Callable[[str], None] = report_skip
                ) -> Iterator[Tuple[str, List[str]]]:
    """(dirpath, sorted image-candidate file names) in os.walk order, dirs sorted.

    Follows directory symlinks as MXNet's ``os.walk(followlinks=True)`` does,
    but never into a directory that is already on the current path (same
    device and inode): such a symlink loop is reported once and skipped, so the
    walk always ends.  Names that are not valid UTF-8 are skipped with a
    message naming their bytes (a `.lst` is UTF-8 text; see README).
    """
    def ident(path: str) -> Optional[Tuple[int, int]]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def walk(path: str, ancestors: frozenset) -> Iterator[Tuple[str, List[str]]]:
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            report(f"skipped folder {path!r}: {exc.strerror or exc}")
            return
        dirs, files = [], []
        for name in names:
            full = os.path.join(path, name)
            if not _utf8_name(name):
                report(f"skipped {os.fsencode(name)!r} in {path!r}: the name is not valid "
                       "UTF-8, which a .lst cannot hold (rename it)")
                continue
            if os.path.isdir(full):
                dirs.append(name)
            elif os.path.isfile(full):
                files.append(name)
        yield path, files
        for d in dirs:
            full = os.path.join(path, d)
            key = ident(full)
            if key is None:
                continue
            if key in ancestors:
                report(f"skipped symlink loop {full!r} -> {os.path.realpath(full)!r} "
                       "(a folder already being walked)")
                continue
            yield from walk(full, ancestors | {key})

    start = ident(root)
    yield from walk(root, frozenset([start] if start else []))


def _walk_fs(fs, root: str) -> Iterator[Tuple[str, List[str]]]:
    """Top-down walk of an fsspec filesystem with os.walk's order (names sorted)."""
    try:
        infos = fs.ls(root, detail=True)
    except FileNotFoundError:
        return
    files, dirs = [], []
    for info in infos:
        name = posixpath.basename(info["name"].rstrip("/"))
        if not name or info["name"].rstrip("/") == root.rstrip("/"):
            continue
        (dirs if info.get("type") == "directory" else files).append(name)
    files.sort()
    dirs.sort()
    yield root, files
    for d in dirs:
        yield from _walk_fs(fs, posixpath.join(root, d))


def list_images(fs, root: str, recursive: bool = False,
                exts: Sequence[str] = DEFAULT_EXTS,
                report: Callable[[str], None] = report_skip
                ) -> Tuple[List[ListEntry], List[Folder]]:
    """Every image under ``root`` as ``ListEntry(index, (label,), relpath)`` in walk order.

    Recursive: label = index of the folder among folders holding a matching
    file, in first-seen order.  Flat: ``sorted(listdir)``, label 0, no folders.
    Symlink loops and non-UTF-8 names are left out, each passed to ``report``
    once (default: a line on stderr).
    """
    local = _is_local(fs)
    j = os.path.join if local else posixpath.join
    rel = os.path.relpath if local else posixpath.relpath
    entries: List[ListEntry] = []
    if not recursive:
        if local:
            names = next(_walk_local(root, report), (root, []))[1]
        else:
            names = next(_walk_fs(fs, root), (root, []))[1]
        for name in names:
            if _suffix_ok(name, exts):
                entries.append(ListEntry(len(entries), (0.0,), name))
        return entries, []
    cat: Dict[str, int] = {}
    walker = _walk_local(root, report) if local else _walk_fs(fs, root)
    for path, files in walker:
        for name in files:
            if not _suffix_ok(name, exts):
                continue
            label = cat.setdefault(path, len(cat))
            entries.append(ListEntry(len(entries), (float(label),), rel(j(path, name), root)))
    folders = [Folder(rel(p, root), v) for p, v in sorted(cat.items(), key=lambda kv: kv[1])]
    return entries, folders


def shuffle_entries(entries: Sequence[ListEntry], seed: int = SHUFFLE_SEED) -> List[ListEntry]:
    """MXNet's shuffle: ``random.seed(100); random.shuffle(list)`` (same permutation)."""
    out = list(entries)
    random.Random(seed).shuffle(out)
    return out


def split_lists(entries: Sequence[ListEntry], chunks: int = 1, train_ratio: float = 1.0,
                test_ratio: float = 0.0) -> List[Tuple[str, List[ListEntry]]]:
    """Cut a (shuffled) list into ``(name_suffix, entries)`` pairs as im2rec names them.

    Per chunk ``i`` (suffix ``_i`` only when ``chunks > 1``): the whole chunk
    when ``train_ratio == 1``; else ``_test`` = first ``int(chunk_size *
    test_ratio)``, ``_train`` = next ``int(chunk_size * train_ratio)``,
    ``_val`` = the rest (only when train + test < 1).  Sizes use the nominal
    chunk size, not the last chunk's actual length, as MXNet does.
    """
    if chunks < 1:
        raise ImageListError(f"--chunks must be >= 1, got {chunks}")
    for flag, ratio in (("--train-ratio", train_ratio), ("--test-ratio", test_ratio)):
        if not 0.0 <= ratio <= 1.0:  # MXNet wrote an empty or overlapping split silently
            raise ImageListError(f"{flag} must be between 0 and 1, got {ratio}")
    n = len(entries)
    chunk_size = (n + chunks - 1) // chunks
    out: List[Tuple[str, List[ListEntry]]] = []
    for i in range(chunks):
        chunk = list(entries[i * chunk_size:(i + 1) * chunk_size])
        tag = "_%d" % i if chunks > 1 else ""
        sep = int(chunk_size * train_ratio)
        sep_test = int(chunk_size * test_ratio)
        if train_ratio == 1.0:
            out.append((tag, chunk))
            continue
        if test_ratio:
            out.append((tag + "_test", chunk[:sep_test]))
        if train_ratio + test_ratio < 1.0:
            out.append((tag + "_val", chunk[sep_test + sep:]))
        out.append((tag + "_train", chunk[sep_test:sep_test + sep]))
    return out


def format_list(entries: Sequence[ListEntry]) -> str:
    """The `.lst` text: ``index\\tlabel(%f)...\\tpath\\n`` per entry."""
    return "".join(format_lst_line(e.index, e.labels, e.path) for e in entries)


def format_folders(folders: Sequence[Folder]) -> str:
    """What im2rec prints after a recursive walk: ``relpath label`` per folder."""
    return "".join(f"{f.relpath} {f.label}\n" for f in folders)


@dataclass
class BadLine:
    """A `.lst` line that could not be used, with the reason."""

    lineno: int
    text: str
    reason: str


def read_list(text: str, url: Optional[str] = None
              ) -> Tuple[List[ListEntry], List[BadLine]]:
    """Parse a `.lst` like im2rec: good entries, plus the bad lines (MXNet skips them).

    A path that is absolute or climbs out of the root with ``..`` is a bad
    line too: packing must never read outside ROOT.
    """
    if isinstance(text, bytes):
        from cloudrec.format.lst import decode_lst
        text = decode_lst(text, url)
    good: List[ListEntry] = []
    bad: List[BadLine] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = parse_lst_line(line, url, i)
            check_relpath(entry.path, url, i)
        except ImageListError as exc:
            bad.append(BadLine(i, line, str(exc)))
            continue
        good.append(entry)
    return good, bad


def check_relpath(path: str, url: Optional[str] = None, lineno: Optional[int] = None) -> str:
    """Return the normalised relative path; raise when it escapes the root."""
    p = path.replace("\\", "/")
    norm = posixpath.normpath(p)
    if p.startswith("/") or os.path.isabs(path) or norm == ".." or norm.startswith("../") \
            or "://" in p:
        raise ImageListError(f"image path {path!r} escapes the image root", url, lineno)
    return norm


def check_label_widths(entries: Sequence[ListEntry], url: Optional[str] = None) -> int:
    """The common label count; raise when lines disagree (packed labels must be uniform)."""
    widths = {len(e.labels) for e in entries}
    if len(widths) > 1:
        first = entries[0]
        other = next(e for e in entries if len(e.labels) != len(first.labels))
        raise ImageListError(
            f"lines carry different label counts ({sorted(widths)}): index {first.index} has "
            f"{len(first.labels)}, index {other.index} has {len(other.labels)}", url)
    return widths.pop() if widths else 0
