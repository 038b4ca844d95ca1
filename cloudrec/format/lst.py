"""The `.lst` image list: ``index\\tlabel...\\tpath`` lines, as im2rec writes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from cloudrec.errors import ImageListError


@dataclass(frozen=True)
class ListEntry:
    """One `.lst` line: the image index, its labels and its path relative to the root."""

    index: int
    labels: Tuple[float, ...]
    path: str


def format_lst_line(index: int, labels: Sequence[float], path: str) -> str:
    """A line as im2rec writes it: index with %d, labels with %f."""
    return "%d\t" % index + "".join("%f\t" % float(x) for x in labels) + "%s\n" % path


def parse_lst_line(line: str, url: Optional[str] = None, lineno: Optional[int] = None,
                   label_width: Optional[int] = None) -> ListEntry:
    """Parse one line; raise ImageListError naming the file and line when it is malformed."""
    fields = [f.strip() for f in line.strip().split("\t")]
    if len(fields) < 3:
        raise ImageListError(f"expected 'index<TAB>label...<TAB>path', got {line.strip()[:80]!r}",
                             url, lineno)
    try:
        index = int(fields[0])
    except ValueError:
        raise ImageListError(f"index {fields[0]!r} is not an integer", url, lineno) from None
    try:
        labels = tuple(float(x) for x in fields[1:-1])
    except ValueError as exc:
        raise ImageListError(f"bad label: {exc}", url, lineno) from None
    if label_width is not None and label_width > 0 and len(labels) != label_width:
        raise ImageListError(f"line has {len(labels)} labels, label_width is {label_width}",
                             url, lineno)
    return ListEntry(index, labels, fields[-1])


def decode_lst(data: bytes, url: Optional[str] = None) -> str:
    """A `.lst` file's bytes as text (a Windows editor's BOM dropped); bytes that are
    not UTF-8 raise naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImageListError(f"not UTF-8 text (byte {exc.start}): is this a .lst file?",
                             url, line) from None


def parse_lst(text: str, url: Optional[str] = None,
              label_width: Optional[int] = None) -> List[ListEntry]:
    """Parse a whole `.lst`; blank lines are skipped, bad lines raise with their number."""
    if isinstance(text, bytes):
        text = decode_lst(text, url)
    return [parse_lst_line(ln, url, i, label_width)
            for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
