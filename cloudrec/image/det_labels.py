"""Detection labels: MXNet's flat layout ``[A, B, header..., objects...]`` parsed and checked.

A raw label is a float vector ``[A, B, h_2 .. h_{A-1}, o_0[0..B-1], o_1[0..B-1], ...]``:
``A`` (>= 2) is the header width, ``B`` (>= 5) the object width, and each object is
``[class_id, xmin, ymin, xmax, ymax, extra...]`` with corners normalised to [0, 1]
(spec §3.6).  MXNet drops objects with ``xmax <= xmin`` or ``ymax <= ymin`` (this is
how padding rows of -1 disappear) and skips a sample with no object left; it never
checks NaN or the range.  Here a malformed label raises :class:`DetLabelError`
naming the file and record, so a broken annotation is found, not trained on.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.errors import LabelError
from cloudrec.format.lst import parse_lst_line

__all__ = ["DetLabelError", "EmptyDetLabelError", "parse_det_label", "make_det_label",
           "check_det_lst", "BOX_TOLERANCE"]

#: Coordinates may stray this far outside [0, 1] (float32 rounding of annotations).
BOX_TOLERANCE = 1e-4


class DetLabelError(LabelError):
    """A detection label is malformed; names the file (URL), record key and `.lst` line."""

    def __init__(self, message: str, url: Optional[str] = None, key: Any = None,
                 line: Optional[int] = None) -> None:
        self.url, self.key, self.line = url, key, line
        parts = [str(url)] if url else []
        if key is not None:
            parts.append(f"record key {key!r}")
        if line is not None:
            parts.append(f"line {line}")
        super().__init__(f"{message} ({', '.join(parts)})" if parts else message)


class EmptyDetLabelError(DetLabelError):
    """A well-formed label without any valid object; ImageDetIter skips such samples (as MXNet)."""


def _fmt(raw: np.ndarray, limit: int = 12) -> str:
    vals = ", ".join("%g" % v for v in raw[:limit])
    return "[" + vals + (", ..." if raw.size > limit else "") + "]"


def parse_det_label(label: Any, *, url: Optional[str] = None, key: Any = None,
                    line: Optional[int] = None, tolerance: float = BOX_TOLERANCE,
                    return_header: bool = False):
    """Parse a raw detection label into the ``(n, B)`` float32 array of its valid objects.

    Raises DetLabelError for NaN/inf, a size below 7, a bad header (A < 2, B < 5,
    non-integer widths), a size that disagrees with ``A + k*B``, or a kept box outside
    [0, 1]; EmptyDetLabelError when no object has ``xmax > xmin and ymax > ymin``.
    With ``return_header`` the result is ``(header, objects)``.
    """
    where = dict(url=url, key=key, line=line)
    raw = np.asarray(label, dtype=np.float32).ravel()
    if not np.all(np.isfinite(raw)):
        bad = int(np.flatnonzero(~np.isfinite(raw))[0])
        raise DetLabelError(f"detection label has a non-finite value {raw[bad]} at position "
                            f"{bad}: {_fmt(raw)}", **where)
    if raw.size < 7:
        raise DetLabelError(f"detection label needs at least 7 values [A, B, class, xmin, ymin, "
                            f"xmax, ymax], got {raw.size}: {_fmt(raw)}", **where)
    a, b = float(raw[0]), float(raw[1])
    if a != int(a) or b != int(b) or a < 2 or b < 5:
        raise DetLabelError(f"detection label header must be integers A >= 2 (header width) and "
                            f"B >= 5 (object width), got A={a:g}, B={b:g}: {_fmt(raw)}", **where)
    a, b = int(a), int(b)
    if a > raw.size or (raw.size - a) % b != 0:
        raise DetLabelError(f"detection label of {raw.size} values disagrees with header width "
                            f"{a} and object width {b}: {raw.size} - {a} is not a multiple of {b}",
                            **where)
    objects = raw[a:].reshape(-1, b)
    valid = (objects[:, 3] > objects[:, 1]) & (objects[:, 4] > objects[:, 2])
    kept = objects[valid]
    if kept.size:
        coords = kept[:, 1:5]
        off = (coords < -tolerance) | (coords > 1 + tolerance)
        if off.any():
            row, col = np.argwhere(off)[0]
            obj = int(np.flatnonzero(valid)[row])
            name = ("xmin", "ymin", "xmax", "ymax")[col]
            raise DetLabelError(f"object {obj} has {name} = {coords[row, col]:g}, outside [0, 1] "
                                f"(box {_fmt(objects[obj])})", **where)
        kept = kept.copy()
        np.clip(kept[:, 1:5], 0.0, 1.0, out=kept[:, 1:5])
    else:
        raise EmptyDetLabelError(f"detection label has no valid object (every box has xmax <= "
                                 f"xmin or ymax <= ymin): {_fmt(raw)}", **where)
    if return_header:
        return raw[:a].copy(), kept
    return kept


def make_det_label(objects: Any, header_extra: Sequence[float] = ()) -> np.ndarray:
    """Build a flat label ``[A, B, header_extra..., objects...]`` from an ``(n, B)`` array."""
    obj = np.asarray(objects, dtype=np.float32)
    if obj.ndim != 2 or obj.shape[1] < 5:
        raise ValueError(f"objects must be an (n, B>=5) array, got shape {obj.shape}")
    head = np.asarray([2 + len(header_extra), obj.shape[1], *header_extra], dtype=np.float32)
    return np.concatenate([head, obj.ravel()])


def check_det_lst(text: Any, url: Optional[str] = None,
                  tolerance: float = BOX_TOLERANCE) -> List[Tuple[int, np.ndarray]]:
    """Validate every detection label of a `.lst` text (``index\\tlabels...\\tpath`` lines).

    Returns ``[(index, objects)]`` in file order; the first bad line raises
    DetLabelError (or ImageListError for an unparsable line) naming the `.lst` URL,
    the 1-based line number and the image index.
    """
    if isinstance(text, bytes):
        from cloudrec.format.lst import decode_lst
        text = decode_lst(text, url)
    out = []
    for lineno, ln in enumerate(text.splitlines(), 1):
        if not ln.strip():
            continue
        e = parse_lst_line(ln, url, lineno)
        out.append((e.index, parse_det_label(e.labels, url=url, key=e.index, line=lineno,
                                             tolerance=tolerance)))
    return out
