"""``cloudrec config list`` and ``cloudrec config show NAME``: the YAML configs shipped
with cloudrec (ImageNet train/val, faces, detection, S3 and HDFS storage).

``show`` prints the file as shipped, so ``cloudrec config show imagenet-train > my.yaml``
starts your own; ``show --resolved`` prints what ``load_config`` makes of it after
``${VAR}`` expansion (credentials are never printed).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, is_dataclass

from cloudrec.configs import config_path, describe_configs


def register(subparsers) -> None:
    """Add ``cloudrec config list|show``."""
    p = subparsers.add_parser("config", help="list or print the YAML configs shipped with cloudrec",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="config_action", metavar="ACTION")
    ls = sub.add_parser("list", help="names and descriptions of the packaged configs")
    ls.set_defaults(func=_list)
    show = sub.add_parser("show", help="print a packaged config (a name from `config list`)")
    show.add_argument("name", help="e.g. imagenet-train")
    show.add_argument("--resolved", action="store_true",
                      help="print the loaded values (after ${VAR} expansion) as JSON instead")
    show.add_argument("--path", action="store_true", help="print only the file's path")
    show.set_defaults(func=_show)
    p.set_defaults(func=_list)


def _list(ns: argparse.Namespace) -> int:
    configs = describe_configs()
    width = max(len(n) for n in configs)
    for name, text in configs.items():
        print(f"{name:<{width}}  {text}")
    print(f"(load one with cloudrec.load_config(NAME) or `cloudrec --config NAME ...`; "
          f"print it with `cloudrec config show NAME`)", file=sys.stderr)
    return 0


def _show(ns: argparse.Namespace) -> int:
    path = config_path(ns.name)
    if ns.path:
        print(path)
        return 0
    if ns.resolved:
        from cloudrec.config import load_config
        cfg = load_config(path)
        values = asdict(cfg) if is_dataclass(cfg) else dict(vars(cfg))
        print(json.dumps(values, indent=2, default=str))
        return 0
    with open(path, encoding="utf-8") as f:
        sys.stdout.write(f.read())
    return 0
