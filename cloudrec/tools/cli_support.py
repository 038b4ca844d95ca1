"""What every ``cloudrec`` command shares: one-line errors, boolean flags that also take
``=1/0/true/false``, and naming the ``pip install 'cloudrec[extra]'`` a missing module needs.

Command-line users read the last line of a failure; a traceback hides it.  So errors
are one line on stderr (``--debug`` or ``CLOUDREC_DEBUG=1`` shows the traceback).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from typing import Any, NoReturn, Optional, Sequence

# importable module name -> the cloudrec extra that installs it
MODULE_EXTRAS = {
    "torch": "torch", "hdfs_native": "hdfs", "adlfs": "azure", "azure": "azure",
    "dask": "dask", "distributed": "dask", "moto": "server", "flask": "server",
    "sklearn": "demo", "matplotlib": "demo", "skimage": "demo",
}
# a command whose every optional module comes with one extra
COMMAND_EXTRAS = {"demo": "demo", "services": "server"}

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def parse_bool(text: str) -> bool:
    """``1/0``, ``true/false``, ``yes/no``, ``on/off`` (any case) -> bool."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


class BoolFlag(argparse.Action):
    """``--flag`` sets True, and ``--flag=1/0/true/false`` sets that value, as the
    im2rec.py of older MXNet releases accepted (``--list=1 --recursive=1``).

    The value must be attached with ``=``, so ``--list PREFIX ROOT`` still reads
    PREFIX as a positional."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None,
                 invert: bool = False) -> None:
        self.invert = invert
        super().__init__(option_strings, dest, nargs="?", const=None, default=default,
                         required=required, help=help, metavar="0|1")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        value = True if values is None else _parse_attached(parser, option_string, values)
        setattr(namespace, self.dest, (not value) if self.invert else value)


def _parse_attached(parser: argparse.ArgumentParser, option: Optional[str], values: Any) -> bool:
    try:
        return parse_bool(values)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"argument {option}: {exc}")
        raise  # not reached: parser.error exits


def attach_bool_values(parser: argparse.ArgumentParser, args: Sequence[str]) -> list:
    """Spell a bare BoolFlag (``--list``, or an unambiguous prefix such as ``--recur``) as
    ``--list=1``, so that it never takes the next word (a positional) as its value."""
    options = {s: a for a in parser._actions for s in a.option_strings}
    out = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + list(args[i:])
        if arg.startswith("--") and "=" not in arg:
            hits = [arg] if arg in options else [o for o in options if o.startswith(arg)]
            if len(hits) == 1 and isinstance(options[hits[0]], BoolFlag):
                arg = hits[0] + "=1"
        out.append(arg)
    return out


def enable_attached_bools(parser: argparse.ArgumentParser) -> None:
    """Give a plain ArgumentParser (one a caller built for ``im2rec.add_arguments``) the
    BoolFlag rule of OneLineParser, so ``--list PREFIX ROOT`` keeps PREFIX positional."""
    if isinstance(parser, OneLineParser) or getattr(parser, "_cloudrec_bools", False):
        return
    plain = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return plain(attach_bool_values(parser, args), namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    parser._cloudrec_bools = True  # type: ignore[attr-defined]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line naming ``--help``, and whose
    BoolFlags take a value only when it is attached with ``=``; sub-commands made from it
    inherit the class (argparse hands each sub-parser its own part of the command line)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        self._cloudrec_args = args
        return super().parse_known_args(attach_bool_values(self, args), namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._greedy_hint(message)} "
                     f"(see `{self.prog} --help`)\n")

    def _greedy_hint(self, message: str) -> str:
        """Missing positionals after ``--exts .png PREFIX ROOT``: say that the list took them."""
        if "arguments are required" not in message:
            return ""
        args = getattr(self, "_cloudrec_args", [])
        for action in self._actions:
            if action.nargs in ("+", "*") and action.option_strings:
                used = [o for o in action.option_strings if o in args]
                if used and "--" not in args:
                    return (f"; {used[0]} takes every word after it: put it after the "
                            f"positional arguments or end its list with --")
        return ""


def extra_for(exc: BaseException, command: Optional[str] = None) -> Optional[str]:
    """The cloudrec extra that provides the module an ImportError is about, if known."""
    seen, chain = set(), [exc]
    while chain:  # the error itself, then what caused it (fsspec wraps the real ImportError)
        e = chain.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        top = (getattr(e, "name", None) or "").split(".")[0]
        if top not in MODULE_EXTRAS:  # "Install adlfs to ...", "... value='hdfs_native.fsspec...'"
            words = re.findall(r"[A-Za-z_][A-Za-z0-9_-]*", str(e))
            top = next((w.replace("-", "_") for w in words
                        if w.replace("-", "_") in MODULE_EXTRAS), "")
        if top in MODULE_EXTRAS:
            exc.name = getattr(exc, "name", None) or top  # type: ignore[attr-defined]
            return COMMAND_EXTRAS.get(command or "", MODULE_EXTRAS[top])
        chain += [e.__cause__, e.__context__]
    return None


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message with newlines folded; foreign exception types
    are named (``EndpointConnectionError: ...``) because their message alone may not say."""
    from cloudrec.errors import CloudrecError
    from cloudrec.storage.redact import redact_text

    text = redact_text(" ".join(str(exc).split()) or repr(exc))  # a foreign message may hold a URL
    if isinstance(exc, CloudrecError):
        return text
    if isinstance(exc, OSError) and type(exc).__module__ == "builtins":
        return text
    hint = _HINTS.get(type(exc).__name__, "")
    return f"{type(exc).__name__}: {text}{hint}"


# what to check, for the foreign errors a first run meets most
_HINTS = {
    "EndpointConnectionError": " - is the server running and the endpoint right? "
                               "(AWS_ENDPOINT_URL or --storage-options)",
    "ConnectTimeoutError": " - is the endpoint reachable? (AWS_ENDPOINT_URL or --storage-options)",
    "NoCredentialsError": " - set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                          "or pass anon=true in --storage-options for a public bucket",
}


def debug_wanted(ns: Optional[argparse.Namespace] = None) -> bool:
    return bool(getattr(ns, "debug", False)) or os.environ.get("CLOUDREC_DEBUG", "") not in ("", "0")


def report_error(prog: str, exc: BaseException, ns: Optional[argparse.Namespace] = None,
                 command: Optional[str] = None) -> int:
    """Print ``exc`` for a command-line user (one line, or the traceback with --debug);
    return the exit code."""
    if debug_wanted(ns):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, ImportError):
        extra = extra_for(exc, command)
        if extra:
            print(f"{prog}: error: needs the optional package {exc.name!r}, which is not "
                  f"installed: pip install 'cloudrec[{extra}]'", file=sys.stderr)
            return 1
    from cloudrec.errors import CloudrecError

    hint = "" if debug_wanted(ns) or isinstance(exc, CloudrecError) else \
        " (--debug shows the traceback)"
    print(f"{prog}: error: {one_line(exc)}{hint}", file=sys.stderr)
    return 1


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (unless the help text already says it, or
    there is none to show: None/False/suppressed), keeping the description's layout."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or "%(default)" in text or default is None or default is False
                or default is argparse.SUPPRESS or not action.option_strings
                or getattr(action, "invert", False)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"
