"""``cloudrec inspect URL``: what is in a RecordIO dataset, without reading all of it.

Shard and record counts come from the `.idx` files (or a scan); the label
histogram and image statistics come from a seeded random sample of records
fetched with ranged reads; ``--grid out.png`` draws a contact sheet of
decoded (optionally augmented) sample images with their labels.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from cloudrec.errors import CloudrecError, ConfigError, HeaderError, ImageDecodeError
from cloudrec.format.irheader import unpack_header

DEFAULT_SAMPLE = 512


@dataclass
class Stats:
    """min / mean / max of a sample."""

    min: float
    mean: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Optional["Stats"]:
        if not len(values):
            return None
        a = np.asarray(values, dtype=np.float64)
        return cls(float(a.min()), round(float(a.mean()), 3), float(a.max()))


@dataclass
class Summary:
    """The report of ``cloudrec inspect`` (also printed as JSON with ``--json``)."""

    shards: int
    records: int
    bytes: int
    sampled: int
    label_histogram: Dict[str, int]
    label_widths: Dict[str, int]
    width: Optional[Stats]
    height: Optional[Stats]
    payload_bytes: Optional[Stats]
    formats: Dict[str, int]
    errors: List[str] = field(default_factory=list)
    shard_records: List[int] = field(default_factory=list)


def _label_key(label: Any) -> str:
    v = float(label if np.ndim(label) == 0 else np.asarray(label).reshape(-1)[0]) \
        if np.size(label) else float("nan")
    return str(int(v)) if v.is_integer() else repr(v)


def sample_ids(n: int, sample: int, seed: int) -> np.ndarray:
    """A sorted random sample of record ids (all of them when ``sample >= n``)."""
    if sample <= 0 or sample >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=sample, replace=False)).astype(np.int64)


def summarize(ds, payloads: Sequence[Tuple[int, bytes]]) -> Summary:
    """Counts from the dataset table plus label/image statistics of the sampled payloads."""
    from cloudrec.image.decode import image_size
    from cloudrec.tools.packing import sniff_image

    labels: Counter = Counter()
    widths: Counter = Counter()
    formats: Counter = Counter()
    ws: List[int] = []
    hs: List[int] = []
    sizes: List[int] = []
    errors: List[str] = []
    for rid, payload in payloads:
        try:
            header, start = unpack_header(payload)
        except HeaderError as exc:
            errors.append(f"{ds.describe(rid)}: {exc}")
            continue
        labels[_label_key(header.label)] += 1
        widths[str(max(1, header.flag) if header.flag else 1)] += 1
        img = payload[start:]
        sizes.append(len(img))
        fmt = sniff_image(img)
        formats[fmt or "unknown"] += 1
        if fmt is None:
            errors.append(f"{ds.describe(rid)}: not an image ({len(img)} bytes, "
                          f"starting {img[:8]!r})")
            continue
        wh = image_size(img)
        if wh is None:
            errors.append(f"{ds.describe(rid)}: image size unreadable")
            continue
        ws.append(wh[0])
        hs.append(wh[1])
    counts = np.bincount(ds.table.shard, minlength=len(ds.shards)).tolist() if len(ds) else []
    hist = dict(sorted(labels.items(), key=lambda kv: (_sort_key(kv[0]))))
    return Summary(len(ds.shards), len(ds), int(ds.nbytes), len(payloads), hist,
                   dict(sorted(widths.items())), Stats.of(ws), Stats.of(hs), Stats.of(sizes),
                   dict(formats.most_common()), errors, counts)


def _sort_key(k: str):
    try:
        return (0, float(k))
    except ValueError:
        return (1, 0.0)


# -- contact sheet -----------------------------------------------------------------------------

def parse_aug(text: Optional[str]) -> Dict[str, Any]:
    """``"rand_crop=1,rand_mirror=1,brightness=0.3"`` -> CreateAugmenter keyword arguments."""
    out: Dict[str, Any] = {}
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise ConfigError(f"--aug wants key=value pairs, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k in ("mean", "std"):
            raise ConfigError("--aug: mean/std normalisation makes no sense in a contact sheet")
        try:
            out[k] = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            raise ConfigError(f"--aug: {k}={v!r} is not a number") from None
    return out


def _augmenter(aug: Dict[str, Any], cell: int):
    if not aug:
        return None
    from cloudrec.image import CreateAugmenter  # optional layer: only needed with --aug

    try:
        return CreateAugmenter((3, cell, cell), **aug)
    except (TypeError, ValueError) as exc:  # an unknown key or a bad value: the user's --aug
        raise ConfigError(f"--aug: {exc}") from None


def _fit(img: np.ndarray, cell: int) -> np.ndarray:
    """Scale ``img`` to fit a ``cell`` x ``cell`` square, centred on black."""
    import cv2

    h, w = img.shape[:2]
    s = cell / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.zeros((cell, cell, 3), np.uint8)
    y, x = (cell - nh) // 2, (cell - nw) // 2
    out[y:y + nh, x:x + nw] = img
    return out


def contact_sheet(items: Sequence[Tuple[str, np.ndarray]], cell: int = 96, cols: int = 8
                  ) -> np.ndarray:
    """Tile RGB images into a grid (BGR result for cv2) with each caption drawn on its cell."""
    import cv2

    cols = max(1, min(cols, len(items)))
    rows = (len(items) + cols - 1) // cols
    pad = 2
    sheet = np.full((rows * (cell + pad) + pad, cols * (cell + pad) + pad, 3), 40, np.uint8)
    for i, (caption, rgb) in enumerate(items):
        tile = _fit(rgb, cell)[:, :, ::-1].copy()
        scale = max(0.35, cell / 200)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(tile, (0, cell - th - base - 4), (min(cell, tw + 5), cell), (0, 0, 0), -1)
        cv2.putText(tile, caption, (2, cell - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(i, cols)
        y, x = pad + r * (cell + pad), pad + c * (cell + pad)
        sheet[y:y + cell, x:x + cell] = tile
    return sheet


def _detection_objects(header) -> Optional[np.ndarray]:
    """The ``(n, B)`` objects when the packed label is a valid detection label, else None."""
    if header.flag < 7:
        return None
    from cloudrec.errors import LabelError
    from cloudrec.image.det_labels import parse_det_label
    try:
        return parse_det_label(header.label)
    except LabelError:
        return None


def grid_images(payloads: Sequence[Tuple[int, bytes]], n: int, cell: int,
                aug: Dict[str, Any], seed: int, url_of=None) -> List[Tuple[str, np.ndarray]]:
    """Decode (and augment) the first ``n`` sampled records: ``(caption, RGB uint8)``."""
    from cloudrec.image.decode import imdecode

    augs = _augmenter(aug, cell)
    rng = np.random.default_rng(seed)
    out = []
    for rid, payload in payloads[:n]:
        try:
            header, start = unpack_header(payload)
            img = imdecode(payload[start:], 1, key=header.id)
        except (HeaderError, ImageDecodeError):
            out.append((f"#{rid} broken", np.zeros((cell, cell, 3), np.uint8)))
            continue
        objects = _detection_objects(header)
        if objects is not None:
            # detection records: boxes drawn on the image as stored (image augmenters
            # would move the pixels under the boxes)
            from cloudrec.image.draw import draw_boxes
            img = draw_boxes(np.ascontiguousarray(img), objects,
                             thickness=max(1, min(img.shape[:2]) // 100))
            out.append((f"{len(objects)} obj: " + ",".join(_label_key(o[0]) for o in objects[:3]),
                        img))
            continue
        if augs:
            x = img
            for a in augs:
                x = a(x, rng)
            img = np.clip(np.asarray(x), 0, 255).astype(np.uint8)
        label = header.label
        cap = _label_key(label) if np.ndim(label) == 0 else \
            ",".join(_label_key(v) for v in np.asarray(label).reshape(-1)[:3])
        out.append((cap, img))
    return out


def write_png(url: str, bgr: np.ndarray, storage_options: Optional[Dict[str, Any]] = None) -> None:
    """Encode ``bgr`` as PNG and write it to any URL."""
    import cv2

    from cloudrec.tools.index import write_atomic

    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise CloudrecError("could not encode the contact sheet")
    write_atomic(url, buf.tobytes(), storage_options)


# -- command ---------------------------------------------------------------------------------------

def inspect(urls, *, sample: int = DEFAULT_SAMPLE, seed: int = 0,
            storage_options: Optional[Dict[str, Any]] = None, grid: Optional[str] = None,
            grid_n: int = 32, cell: int = 96, cols: int = 8, aug: Optional[Dict[str, Any]] = None
            ) -> Summary:
    """Open the dataset, sample it, and optionally write the contact sheet."""
    from cloudrec.dataset import open_dataset
    from cloudrec.reader.fetch import RecordFetcher

    ds = open_dataset(urls, storage_options=storage_options, require_index=False)
    ids = sample_ids(len(ds), sample, seed)
    from cloudrec.options import FetchOptions
    fetcher = RecordFetcher(ds, **FetchOptions().fetcher_kwargs([sh.rec_url for sh in ds.shards]))
    try:
        payloads = list(fetcher.fetch(ids.tolist()))
    finally:
        fetcher.close()
    summary = summarize(ds, payloads)
    if grid:
        # the grid shows a random subset of the sample (the sample itself is sorted by id)
        order = np.random.default_rng(seed).permutation(len(payloads))
        shown = [payloads[i] for i in order[:grid_n]]
        sheet = contact_sheet(grid_images(shown, grid_n, cell, aug or {}, seed), cell, cols)
        write_png(grid, sheet, storage_options)
    return summary


def format_summary(s: Summary) -> str:
    """Human-readable report."""
    def st(x: Optional[Stats]) -> str:
        return "n/a" if x is None else f"min {x.min:g}, mean {x.mean:g}, max {x.max:g}"

    lines = [f"shards: {s.shards} ({s.bytes / 1e6:.1f} MB)",
             f"records: {s.records}",
             f"sampled: {s.sampled}" + (" (all)" if s.sampled == s.records else ""),
             "label histogram (first label" + (", sampled" if s.sampled < s.records else "")
             + "):"]
    total = max(1, sum(s.label_histogram.values()))
    top = sorted(s.label_histogram.items(), key=lambda kv: -kv[1])[:30]
    for k, v in sorted(top, key=lambda kv: _sort_key(kv[0])):
        lines.append(f"  {k:>8}: {v:6d}  {'#' * max(1, round(40 * v / total))}")
    if len(s.label_histogram) > 30:
        lines.append(f"  ... {len(s.label_histogram)} distinct labels")
    lines += [f"labels per record: {s.label_widths}",
              f"image width: {st(s.width)}", f"image height: {st(s.height)}",
              f"image bytes: {st(s.payload_bytes)}", f"formats: {s.formats}"]
    if s.errors:
        lines.append(f"problems in the sample: {len(s.errors)}")
        lines += [f"  {e}" for e in s.errors[:10]]
    return "\n".join(lines) + "\n"


def run(ns: argparse.Namespace) -> int:
    if ns.aug and not ns.grid:  # --aug only shapes the contact sheet
        print("inspect: warning: --aug has no effect without --grid PNG", file=sys.stderr)
    summary = inspect(ns.url, sample=ns.sample, seed=ns.seed, storage_options=ns.storage_options,
                      grid=ns.grid, grid_n=ns.grid_n, cell=ns.cell, cols=ns.cols,
                      aug=parse_aug(ns.aug))
    if ns.json:
        print(json.dumps(asdict(summary), indent=1))
    else:
        sys.stdout.write(format_summary(summary))
        if ns.grid:
            print(f"contact sheet: {ns.grid}")
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a 0-pixel cell crashed inside OpenCV)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (0 means all)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", nargs="+", help=".rec URL(s), a glob (s3://b/train-*.rec) or a "
                                          "brace range (train-{0000..0007}.rec)")
    p.add_argument("--sample", type=_non_negative_int, default=DEFAULT_SAMPLE,
                   help="records to sample for labels and image statistics (0: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling / augmentation seed")
    p.add_argument("--grid", default=None, help="write a contact sheet PNG to this path/URL")
    p.add_argument("--grid-n", type=_positive_int, default=32, help="images on the contact sheet")
    p.add_argument("--cell", type=_positive_int, default=96, help="cell size in pixels")
    p.add_argument("--cols", type=_positive_int, default=8, help="columns of the contact sheet")
    p.add_argument("--aug", default=None,
                   help="augment the sheet's images: CreateAugmenter arguments, e.g. "
                        "'rand_crop=1,rand_mirror=1,brightness=0.3' (crop size = --cell)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--storage-options", type=json.loads, default=None,
                   help="JSON dict of fsspec storage options")


def register(subparsers) -> None:
    """Add ``cloudrec inspect`` to the ``cloudrec`` command."""
    p = subparsers.add_parser("inspect", help="summarise a .rec dataset; contact sheet",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="cloudrec-inspect")
    add_arguments(p)
    ns = p.parse_args(argv)
    try:
        return run(ns)
    except (CloudrecError, FileNotFoundError) as exc:
        print(f"cloudrec inspect: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
