"""The ``cloudrec`` command: one sub-command per tool module.

Each tool module exposes ``register(subparsers)`` which adds its parser and
sets ``func`` to a callable taking the parsed namespace and returning an exit
code.  Modules are imported lazily so that ``cloudrec --help`` stays fast and a
missing optional extra only breaks its own sub-command.

Errors are one line on stderr with a non-zero exit code; ``--debug`` (before or
after the sub-command) or ``CLOUDREC_DEBUG=1`` adds the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from cloudrec import __version__
from cloudrec.tools.cli_support import OneLineParser, report_error

# sub-command name -> module that registers it
SUBCOMMANDS = {
    "im2rec": "cloudrec.tools.im2rec",
    "index": "cloudrec.tools.index",
    "inspect": "cloudrec.tools.inspect",
    "cache": "cloudrec.tools.cache",
    "simulate": "cloudrec.tools.simulate",
    "config": "cloudrec.tools.config_cmd",
    "demo": "cloudrec.tools.demo",
    "services": "cloudrec.testing.cli",
}
_CONFIG_HELP = ("YAML config: a packaged name (`cloudrec config list`) or a path/URL; "
                "fills --storage-options and the cache folder")
_DEBUG_HELP = "on an error, show the traceback too"


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--config``/``--debug`` also after the sub-command (``cloudrec cache ls --debug``);
    SUPPRESS keeps a value given before the sub-command."""
    for flag, kw in (("--config", dict(help=_CONFIG_HELP, metavar="NAME_OR_PATH")),
                     ("--debug", dict(action="store_true", help=_DEBUG_HELP))):
        try:
            parser.add_argument(flag, default=argparse.SUPPRESS, **kw)
        except argparse.ArgumentError:
            pass  # the command has an option of that name: its own wins
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_global_options(child)


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cloudrec",
        description="MXNet RecordIO image datasets on any URL (local, s3://, hdfs://, ...): "
                    "pack, index, inspect, cache, configs, demo.",
        epilog="Options of a command go after it: cloudrec COMMAND --help.")
    parser.add_argument("--version", action="version", version=f"cloudrec {__version__}")
    parser.add_argument("--config", default=None, help=_CONFIG_HELP, metavar="NAME_OR_PATH")
    parser.add_argument("--debug", action="store_true", default=False, help=_DEBUG_HELP)
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
            p.set_defaults(func=lambda ns, _e=exc: _raise(_e))
            continue
        mod.register(sub)
    _add_global_options_to_commands(sub)
    return parser


def _add_global_options_to_commands(sub: argparse._SubParsersAction) -> None:
    for child in set(sub.choices.values()):
        _add_global_options(child)


def apply_config(ns: argparse.Namespace) -> None:
    """Fill options the command line left unset from ``--config``'s storage section.

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


def _raise(exc: Exception) -> int:
    raise exc


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    ns, extra = parser.parse_known_args(argv)
    prog = f"cloudrec {ns.command}" if ns.command else "cloudrec"
    if extra:  # name the command whose options these are not
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extra)} "
                       f"(see `{prog} --help`)\n")
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    try:
        if ns.config:
            apply_config(ns)
        return int(ns.func(ns) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # one line for users; --debug adds the traceback
        return report_error(prog, exc, ns, command=ns.command)


if __name__ == "__main__":
    sys.exit(main())
