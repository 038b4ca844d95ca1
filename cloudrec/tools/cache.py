"""``cloudrec cache ls|verify|clear``: inspect, check and empty the shard cache.

``verify`` recomputes every entry's CRC32 and drops damaged ones (they are
downloaded again when next needed); it exits with status 1 when it found any.
URLs are shown with their secrets masked.
"""
from __future__ import annotations

import argparse
import time

from cloudrec.storage.cache import ShardCache, default_cache_dir
from cloudrec.storage.redact import redact_url


def register(subparsers) -> None:
    """Add the ``cache`` sub-command (``ls`` / ``clear``)."""
    p = subparsers.add_parser("cache", help="list, verify or clear the local shard cache",
                              description=__doc__)
    dir_help = f"cache folder (default: $CLOUDREC_CACHE_DIR, else {default_cache_dir()})"
    p.add_argument("--dir", default=None, help=dir_help)
    # --dir also after the action (`cache ls --dir X`); SUPPRESS keeps `cache --dir X ls`
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--dir", default=argparse.SUPPRESS, help=dir_help)
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    ls = sub.add_parser("ls", parents=[after], help="list cached shards, least recently used first")
    ls.set_defaults(func=_ls)
    verify = sub.add_parser("verify", parents=[after],
                            help="check every cached shard's CRC32; drop damaged ones")
    verify.set_defaults(func=_verify)
    clear = sub.add_parser("clear", parents=[after],
                           help="remove cached shards (all, or those of URLs given)")
    clear.add_argument("urls", nargs="*", help="only these shard URLs")
    clear.set_defaults(func=_clear)
    p.set_defaults(func=_ls)


def _ls(ns: argparse.Namespace) -> int:
    cache = ShardCache(ns.dir)
    entries = cache.entries()
    total = 0
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used))
        print(f"{e.size:>14,d}  {used}  {redact_url(e.url)}  [{e.version}]")
        total += e.size
    print(f"{len(entries)} shard(s), {total:,d} bytes in {cache.dir}")
    return 0


def _clear(ns: argparse.Namespace) -> int:
    cache = ShardCache(ns.dir)
    if ns.urls:
        n = sum(cache.remove(u) for u in ns.urls)
    else:
        n = cache.clear()
    print(f"removed {n} shard(s) from {cache.dir}")
    return 0


def _verify(ns: argparse.Namespace) -> int:
    cache = ShardCache(ns.dir)
    good, bad = cache.verify()
    for e in bad:
        why = "no checksum recorded" if e.crc32 is None else "CRC32 mismatch"
        done = "kept (read-only folder)" if cache.read_only else "dropped"
        print(f"damaged: {redact_url(e.url)} [{e.version}] ({why}), {done}")
    print(f"{len(good)} shard(s) intact, {len(bad)} damaged in {cache.dir}")
    return 1 if bad else 0
