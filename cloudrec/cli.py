"""The ``cloudrec`` command: one sub-command per tool module.

Each tool module exposes ``register(subparsers)`` which adds its parser and
sets ``func`` to a callable taking the parsed namespace and returning an exit
code.  Modules are imported lazily so that ``cloudrec --help`` stays fast and a
missing optional extra only breaks its own sub-command.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# sub-command name -> module that registers it
SUBCOMMANDS = {
    "im2rec": "cloudrec.tools.im2rec",
    "index": "cloudrec.tools.index",
    "inspect": "cloudrec.tools.inspect",
    "cache": "cloudrec.tools.cache",
    "demo": "cloudrec.tools.demo",
    "services": "cloudrec.testing.cli",
}


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudrec",
        description="MXNet RecordIO image datasets on any URL (local, s3://, hdfs://, ...): "
                    "pack, index, inspect, cache, demo.")
    parser.add_argument("--config", default=None, help="YAML config file (see config/)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    if argv:
        wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, modname in SUBCOMMANDS.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name, help=f"(see cloudrec {name} --help)")
            continue
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            p = sub.add_parser(name, help=f"unavailable: {exc}")
            p.set_defaults(func=lambda ns, _e=exc: _unavailable(_e))
            continue
        mod.register(sub)
    return parser


def apply_config(ns: argparse.Namespace) -> None:
    """Fill options the command line left unset from ``--config FILE``'s storage section.

    ``--storage-options`` (im2rec, index, inspect) defaults to the config's
    storage options, and ``cache --dir`` to its cache folder; explicit flags win.
    """
    from cloudrec.config import load_config

    cfg = load_config(ns.config)
    if hasattr(ns, "storage_options") and ns.storage_options is None:
        ns.storage_options = cfg.storage.storage_options() or None
    if ns.command == "cache" and getattr(ns, "dir", None) is None and cfg.storage.cache_dir:
        ns.dir = cfg.storage.cache_dir
    ns.loaded_config = cfg


def _unavailable(exc: Exception) -> int:
    print(f"cloudrec: this command is unavailable: {exc}", file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    try:
        if ns.config:
            apply_config(ns)
        return int(ns.func(ns) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error for users, no traceback
        from cloudrec.errors import CloudrecError
        if isinstance(exc, (CloudrecError, OSError)):  # OSError names its file
            print(f"cloudrec {ns.command}: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
