"""Where ImageIter's samples come from: indexed records (through the one record source),
image lists and files under ``path_root`` at any URL."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from cloudrec.errors import HeaderError, ImageListError
from cloudrec.format.irheader import unpack_header
from cloudrec.iterators._records import RecordSource

__all__ = ["IndexedRecAdapter", "unpack_header_named", "read_text", "load_label_map",
           "list_entries"]


class IndexedRecAdapter:
    """``read_idx(key)``/``reset()``/``keys`` over the record source, for code written against
    MXNet's ``self.imgrec`` (an MXIndexedRecordIO)."""

    def __init__(self, source: RecordSource) -> None:
        self.source, self.ds, self.fetcher = source, source.ds, source.fetcher
        self.keys = [k.item() if hasattr(k, "item") else k for k in self.ds.table.key]
        self._rid: Optional[Dict[Any, int]] = None

    def read_idx(self, key) -> bytes:
        if self._rid is None:
            self._rid = {k: i for i, k in enumerate(self.keys)}  # a later duplicate wins
        return self.fetcher.get(self._rid[key])

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.source.close()


def unpack_header_named(payload, where: str):
    """unpack_header, naming the record (file, key, offset) when the header is bad."""
    try:
        return unpack_header(payload)
    except HeaderError as exc:
        raise HeaderError(f"{exc} ({where})") from None


def read_text(url: str, storage_options) -> str:
    """A UTF-8 text file (an image list) at any URL."""
    from cloudrec.storage.fs import resolve
    fs, path = resolve(url, storage_options)
    from cloudrec.format.lst import decode_lst
    with fs.open(path, "rb") as f:
        return decode_lst(f.read(), url)


def load_label_map(url: str, label_width: int, storage_options: Optional[Dict[str, Any]]
                  ) -> Dict[int, np.ndarray]:
    """ImageRecordIter's ``path_imglist``: MXNet's ImageLabelMap (whitespace tokens, id then
    ``label_width`` labels; the path column ignored), as {id: float32 labels}."""
    from cloudrec.storage.fs import resolve
    fs, path = resolve(url, storage_options)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageListError("image list not found", url) from None
    from cloudrec.format.lst import decode_lst
    text = decode_lst(data, url)
    out: Dict[int, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) < label_width + 1:
            raise ImageListError(f"Bad ImageList format: need an id and {label_width} "
                                 f"label(s), got {len(tok)} field(s)", url, lineno)
        try:
            key = int(float(tok[0]))
            out[key] = np.array([float(x) for x in tok[1:1 + label_width]], np.float32)
        except ValueError as exc:
            raise ImageListError(f"Bad ImageList format: {exc}", url, lineno) from None
    return out


def list_entries(path_imglist: Optional[str], imglist: Any, dtype: str,
                 storage_options: Optional[Dict[str, Any]]
                 ) -> Tuple[Optional[List[Tuple[Any, np.ndarray, str]]], Optional[str]]:
    """ImageIter's image list as ``[(key, labels, path)]`` and where it came from: a `.lst`
    at any URL (``path_imglist``), or MXNet's python list ``[[label(s)..., path], ...]``
    (keys "1", "2", ... as MXNet numbers them); ``(None, None)`` without either."""
    from cloudrec.format.lst import parse_lst
    if path_imglist:
        entries = parse_lst(read_text(path_imglist, storage_options), url=path_imglist)
        return [(e.index, np.array(e.labels, dtype=dtype), e.path) for e in entries], path_imglist
    if not isinstance(imglist, list):
        return None, None
    out = []
    for index, img in enumerate(imglist, 1):
        if len(img) > 2:
            label = np.array(img[:-1], dtype=dtype)
        elif isinstance(img[0], (int, float, np.number)):
            label = np.array([img[0]], dtype=dtype)
        else:
            label = np.array(img[0], dtype=dtype)
        out.append((str(index), label, img[-1]))
    return out, "imglist"
