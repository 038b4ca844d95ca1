"""``cloudrec im2rec PREFIX ROOT``: MXNet's ``tools/im2rec.py``, on any URL.

``--list`` writes `.lst` files exactly as MXNet's tool does (same walk,
labels, shuffle, splits, printed ``folder label`` lines); otherwise every
``PREFIX*.lst`` next to PREFIX is packed into `.rec`/`.idx` (byte-identical
to MXNet for ``--pass-through``), in parallel, optionally sharded, written
atomically.  ``python -m cloudrec.tools.im2rec`` takes the same arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from cloudrec.errors import ConfigError, ImageListError
from cloudrec.storage.fs import join_url, resolve
from cloudrec.tools import listing
from cloudrec.tools.cli_support import (BoolFlag, DefaultsHelpFormatter, OneLineParser,
                                        enable_attached_bools, report_error)
from cloudrec.tools.packing import (CHECKS, ON_ERROR, EncodeOptions, Failure, ImageSource,
                                    PackError, PackReport, ShardedWriter, pack_entries,
                                    write_bytes_atomic, write_failure_report)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.I)


def parse_size(text: str) -> int:
    """``"64MB"``, ``"1.5G"``, ``"1048576"`` -> bytes (K/M/G/T are powers of 1024)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1048576, 64MB, 1G)")
    mult = 1024 ** " kmgt".index((m.group(2) or " ").lower())
    return int(float(m.group(1)) * mult)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """MXNet im2rec.py's arguments (same names and defaults) plus cloudrec's extras."""
    enable_attached_bools(parser)  # --list=1 and --list PREFIX ROOT both work
    parser.add_argument("prefix", help="prefix of input/output lst and rec files (path or URL)")
    parser.add_argument("root", help="path or URL of the folder containing images")
    cg = parser.add_argument_group("Options for creating image lists")
    cg.add_argument("--list", action=BoolFlag,
                    help="make a list of images (.lst) instead of packing records")
    cg.add_argument("--exts", nargs="+", default=[".jpeg", ".jpg", ".png"],
                    help="list of acceptable image extensions; it takes every word that "
                         "follows, so put it after PREFIX ROOT or end it with --")
    cg.add_argument("--chunks", type=int, default=1, help="number of chunks")
    cg.add_argument("--train-ratio", type=float, default=1.0,
                    help="ratio of images to use for training")
    cg.add_argument("--test-ratio", type=float, default=0,
                    help="ratio of images to use for testing (only with --train-ratio < 1, "
                         "as in MXNet)")
    cg.add_argument("--recursive", action=BoolFlag,
                    help="walk sub-folders; each folder with images gets its own label")
    cg.add_argument("--shuffle", dest="shuffle", action=BoolFlag, default=True,
                    help="shuffle the list with MXNet's seeded shuffle (default; "
                         "--shuffle=0 is --no-shuffle)")
    cg.add_argument("--no-shuffle", dest="shuffle", action=BoolFlag, invert=True, default=True,
                    help="keep the walk order (the same as --shuffle=0)")
    rg = parser.add_argument_group("Options for creating database")
    rg.add_argument("--pass-through", action=BoolFlag,
                    help="pack the image files unchanged (no decode, resize or crop)")
    rg.add_argument("--resize", type=int, default=0, help="resize the shorter edge to this size")
    rg.add_argument("--center-crop", action=BoolFlag, help="crop the central square first")
    rg.add_argument("--quality", type=int, default=95,
                    help="JPEG quality (0-100), or PNG compression (0-9) with --encoding .png")
    rg.add_argument("--num-thread", type=int, default=1,
                    help="number of workers reading and encoding (output order is list order)")
    rg.add_argument("--color", type=int, default=1, choices=[-1, 0, 1],
                    help="1: colour, 0: grayscale, -1: unchanged (cv2 imread flag)")
    rg.add_argument("--encoding", type=str, default=".jpg", choices=[".jpg", ".png"],
                    help="encoding of re-encoded images")
    rg.add_argument("--pack-label", action=BoolFlag,
                    help="store every label of a multi-label list line (flag = label count)")
    xg = parser.add_argument_group("cloudrec extensions")
    sg = xg.add_mutually_exclusive_group()
    sg.add_argument("--num-shards", type=int, default=None,
                    help="write N shards PREFIX-00000-of-0000N.rec/.idx (contiguous, near-equal)")
    sg.add_argument("--shard-size", type=parse_size, default=None,
                    help="start a new shard before one would exceed this many bytes (64MB, 1G); "
                         "a record larger than this gets a shard of its own")
    xg.add_argument("--on-error", choices=ON_ERROR, default="fail",
                    help="an unreadable/undecodable image or bad list line: 'fail' (default; "
                         "nothing is written) or 'skip' (counted, listed in PREFIX.errors.tsv)")
    xg.add_argument("--check", choices=CHECKS, default="header",
                    help="pass-through validation: none, header (image magic bytes, default), "
                         "or decode (full decode)")
    xg.add_argument("--pool", choices=("thread", "process"), default="thread",
                    help="worker kind for --num-thread > 1 (cv2 and reads release the GIL)")
    xg.add_argument("--progress", dest="progress", action=BoolFlag, default=None,
                    help="always show the progress bar (default: only on a terminal)")
    xg.add_argument("--no-progress", dest="progress", action=BoolFlag, invert=True, default=None,
                    help="never show the progress bar")
    xg.add_argument("--engine", choices=("local", "dask"), default="local",
                    help="dask: pack shards as Dask tasks, each writing its own shard")
    xg.add_argument("--scheduler", default=None,
                    help="Dask scheduler address (default: a LocalCluster)")
    xg.add_argument("--dask-workers", type=int, default=2,
                    help="LocalCluster workers when no --scheduler is given")
    xg.add_argument("--storage-options", type=json.loads, default=None,
                    help="JSON dict of fsspec storage options (e.g. an S3 endpoint_url)")


def _is_url(s: str) -> bool:
    return "://" in s


def _absolute(s: str) -> str:
    """MXNet makes PREFIX and ROOT absolute; URLs stay as they are."""
    return s if _is_url(s) else os.path.abspath(s)


def _parent_url(url: str) -> str:
    if not _is_url(url):
        return os.path.dirname(url)
    head, _, tail = url.rstrip("/").rpartition("/")
    return head if not head.endswith(":/") else head + "/"


def write_text_atomic(url: str, text: str, storage_options: Optional[Dict[str, Any]] = None
                      ) -> None:
    """Write ``text`` under a temporary name next to ``url``, then rename it into place."""
    write_bytes_atomic(url, text.encode("utf-8"), storage_options)


# -- --list ---------------------------------------------------------------------------------------

def make_lists(ns: argparse.Namespace, out: Optional[TextIO] = None) -> List[str]:
    """``--list`` mode: walk ROOT and write the `.lst` file(s); return their URLs."""
    out = out or sys.stdout
    so = ns.storage_options
    root_url, prefix_url = _absolute(ns.root), _absolute(ns.prefix)
    fs, root = resolve(root_url, so)
    if not fs.isdir(root):
        raise ImageListError("image root is not a folder (or does not exist)", root_url)
    entries, folders = listing.list_images(fs, root, ns.recursive, ns.exts)
    out.write(listing.format_folders(folders))
    out.flush()
    if not entries:
        raise ImageListError(f"no image with an extension in {list(ns.exts)} found "
                             f"({'recursive' if ns.recursive else 'not recursive'})", root_url)
    if ns.shuffle:
        entries = listing.shuffle_entries(entries)
    written = []
    for suffix, chunk in listing.split_lists(entries, ns.chunks, ns.train_ratio, ns.test_ratio):
        url = prefix_url + suffix + ".lst"
        write_text_atomic(url, listing.format_list(chunk), so)
        written.append(url)
    if ns.test_ratio and ns.train_ratio == 1.0:  # MXNet's rule, easy to trip over
        print(f"im2rec: warning: --test-ratio {ns.test_ratio:g} has no effect while "
              f"--train-ratio is 1 (as in MXNet): wrote only "
              f"{', '.join(posixpath.basename(w) for w in written)} with every image; for "
              f"_train and _test lists pass --train-ratio {1 - ns.test_ratio:g} as well",
              file=sys.stderr)
    return written


# -- packing ------------------------------------------------------------------------------------

def find_lists(prefix_url: str, storage_options: Optional[Dict[str, Any]] = None
               ) -> Tuple[str, List[str]]:
    """im2rec's rule: every ``*.lst`` whose full path starts with PREFIX, in PREFIX's folder
    (or in PREFIX itself when it is a folder).  Returns ``(folder URL, sorted list URLs)``."""
    fs, ppath = resolve(prefix_url, storage_options)
    if fs.isdir(ppath):
        dir_url, dpath = prefix_url.rstrip("/"), ppath.rstrip("/")
    else:
        dir_url, dpath = _parent_url(prefix_url), posixpath.dirname(ppath)
    try:
        infos = fs.ls(dpath or "/", detail=True)
    except FileNotFoundError:
        raise ImageListError("output folder does not exist", dir_url) from None
    names = sorted(posixpath.basename(i["name"].rstrip("/")) for i in infos
                   if i.get("type") != "directory")
    lsts = [join_url(dir_url, n) for n in names
            if posixpath.join(dpath, n).startswith(ppath) and n.endswith(".lst")]
    return dir_url, lsts


def encode_options(ns: argparse.Namespace) -> EncodeOptions:
    """The per-image encoding settings from parsed arguments."""
    if ns.resize < 0:
        raise ConfigError(f"--resize must be >= 0, got {ns.resize}")
    if ns.pass_through:  # MXNet ignores these silently; the user asked for them, so say so
        ignored = [flag for flag, on in (("--resize", ns.resize), ("--center-crop", ns.center_crop),
                                         ("--quality", ns.quality != 95), ("--color", ns.color != 1),
                                         ("--encoding", ns.encoding != ".jpg")) if on]
        if ignored:
            print(f"im2rec: warning: --pass-through packs files unchanged; ignoring "
                  f"{', '.join(ignored)}", file=sys.stderr)
    return EncodeOptions(pass_through=ns.pass_through, resize=ns.resize,
                         center_crop=ns.center_crop, quality=ns.quality, color=ns.color,
                         encoding=ns.encoding, pack_label=ns.pack_label, check=ns.check)


def load_list(lst_url: str, on_error: str, pack_label: bool,
              storage_options: Optional[Dict[str, Any]] = None):
    """Read and validate a `.lst`: ``(entries, failures for skipped lines)``."""
    fs, path = resolve(lst_url, storage_options)
    from cloudrec.format.lst import decode_lst
    text = decode_lst(fs.cat_file(path), lst_url)
    entries, bad = listing.read_list(text, lst_url)
    failures = []
    for b in bad:
        if on_error == "fail":
            raise ImageListError(b.reason + "; use --on-error skip to skip bad lines")
        print(f"im2rec: skipped list line: {b.reason}", file=sys.stderr)
        failures.append(Failure(-1, f"{lst_url}:{b.lineno}", b.reason))
    if not entries:
        raise ImageListError("image list has no usable entries", lst_url)
    if pack_label:
        if len({len(e.labels) for e in entries}) > 1 and _looks_like_detection(entries):
            _check_detection_list(text, lst_url)  # variable widths are legal here
        else:
            listing.check_label_widths(entries, lst_url)
    return entries, failures


def _looks_like_detection(entries) -> bool:
    """Every line starts with MXNet's detection header: A >= 2 and B >= 5, both integers."""
    def head_ok(labels) -> bool:
        return (len(labels) >= 2 and labels[0] >= 2 and labels[1] >= 5
                and float(labels[0]).is_integer() and float(labels[1]).is_integer())
    return all(head_ok(e.labels) for e in entries)


def _check_detection_list(text: str, lst_url: str) -> None:
    """Validate each detection label (layout, NaN, boxes in 0..1), naming the bad line.

    Images without a valid object are packed (ImageDetIter skips them, as MXNet)."""
    from cloudrec.format.lst import parse_lst_line
    from cloudrec.image.det_labels import EmptyDetLabelError, parse_det_label

    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        entry = parse_lst_line(line, lst_url, lineno)
        try:
            parse_det_label(entry.labels, url=lst_url, key=entry.index, line=lineno)
        except EmptyDetLabelError:
            pass


def pack_list(ns: argparse.Namespace, lst_url: str, dir_url: str,
              out: Optional[TextIO] = None) -> PackReport:
    """Pack one `.lst` into ``dir_url``: records, shards, error report, atomic commit."""
    out = out or sys.stdout
    so = ns.storage_options
    entries, list_failures = load_list(lst_url, ns.on_error, ns.pack_label, so)
    base = os.path.splitext(posixpath.basename(lst_url))[0]
    source = ImageSource(_absolute(ns.root), so)
    opts = encode_options(ns)
    if ns.num_thread < 1:
        raise ConfigError(f"--num-thread must be >= 1, got {ns.num_thread}")
    if ns.engine == "dask":
        from cloudrec.tools.dask_pack import pack_with_dask  # optional dependency

        report = pack_with_dask(entries, source, dir_url, base, opts, num_shards=ns.num_shards,
                                shard_size=ns.shard_size, on_error=ns.on_error,
                                scheduler=ns.scheduler, n_workers=ns.dask_workers,
                                num_thread=ns.num_thread, storage_options=so,
                                progress=ns.progress)
    else:
        writer = ShardedWriter(dir_url, base, so, total=len(entries), num_shards=ns.num_shards,
                               shard_size=ns.shard_size)
        report = pack_entries(entries, source, writer, opts, num_thread=ns.num_thread,
                              pool=ns.pool, on_error=ns.on_error, progress=ns.progress,
                              desc=base)
        if report.records == 0:
            writer.abort()
            raise PackError(f"no image of {lst_url} could be packed "
                            f"({len(report.failures)} failed)")
        writer.commit()
    report.failures = list_failures + report.failures
    report_url = join_url(dir_url, base + ".errors.tsv")
    if report.failures:
        report.report_url = report_url
        write_failure_report(report.report_url, report.failures, so)
    else:
        _remove_stale(report_url, so)
    outs = ", ".join(posixpath.basename(s.final_rec) for s in report.shards)
    msg = (f"packed {report.records} images ({report.bytes_out / 1e6:.1f} MB) into {outs} "
           f"in {report.seconds:.1f} s")
    if report.failures:
        msg += f"; skipped {len(report.failures)}, listed in {report.report_url}"
    print(msg, file=out)
    return report


def _remove_stale(url: str, storage_options: Optional[Dict[str, Any]] = None) -> None:
    """A clean pack removes the error report of an earlier run, which no longer applies."""
    fs, path = resolve(url, storage_options)
    try:
        if fs.exists(path):
            fs.rm_file(path)
    except FileNotFoundError:
        pass


def run(ns: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Entry point shared by ``cloudrec im2rec`` and ``python -m cloudrec.tools.im2rec``."""
    out = out or sys.stdout
    if ns.list:
        make_lists(ns, out)
        return 0
    prefix_url = _absolute(ns.prefix)
    dir_url, lsts = find_lists(prefix_url, ns.storage_options)
    if not lsts:
        raise ImageListError("did not find any .lst file with prefix %s" % prefix_url)
    for lst in lsts:
        print("Creating .rec file from", lst, "in", dir_url, file=out)
        out.flush()
        pack_list(ns, lst, dir_url, out)
    return 0


_EPILOG = ("Boolean flags also take =1/0/true/false (--list=1 --recursive=1, as older MXNet "
           "tutorials write them).")


def register(subparsers) -> None:
    """Add ``cloudrec im2rec`` to the ``cloudrec`` command."""
    p = subparsers.add_parser("im2rec", help="make image lists and pack them into .rec/.idx",
                              description=__doc__.splitlines()[0], epilog=_EPILOG,
                              formatter_class=DefaultsHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m cloudrec.tools.im2rec``: the same arguments as MXNet's im2rec.py."""
    parser = OneLineParser(
        prog="im2rec", formatter_class=DefaultsHelpFormatter, epilog=_EPILOG,
        description="Create an image list or make a record database by reading from an "
                    "image list")
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback")
    ns = parser.parse_args(argv)
    try:
        return run(ns)
    except KeyboardInterrupt:
        print("im2rec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line; --debug adds the traceback
        return report_error("im2rec", exc, ns, command="im2rec")


if __name__ == "__main__":
    sys.exit(main())
