"""The YAML configs shipped inside the package, found by name.

``cloudrec.load_config("imagenet-train")`` and ``cloudrec config show imagenet-train``
work wherever cloudrec is installed (a wheel, not only a clone), because the files
live here as package data.  A value that names an existing file or a URL is used as
it is, so a user's own ``./my.yaml`` always wins over a packaged name.
"""
from __future__ import annotations

import difflib
import os
from importlib import resources
from typing import Dict, List, Union

from cloudrec.errors import ConfigError

_SUFFIXES = (".yaml", ".yml")


def _folder():
    return resources.files(__name__)


def config_names() -> List[str]:
    """Names of the packaged configs (file names without ``.yaml``), sorted."""
    return sorted(e.name[:-len(".yaml")] for e in _folder().iterdir()
                  if e.name.endswith(".yaml") and e.is_file())


def config_path(name: str) -> str:
    """Path of the packaged config ``name`` (``imagenet-train`` or ``imagenet-train.yaml``)."""
    stem = name[:-len(".yaml")] if name.endswith(".yaml") else name
    stem = stem[:-len(".yml")] if stem.endswith(".yml") else stem
    names = config_names()
    if stem not in names:
        close = difflib.get_close_matches(stem, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"no config file {name!r} and no packaged config of that name "
                          f"({hint}packaged: {', '.join(names)})")
    return os.fspath(_folder() / f"{stem}.yaml")


def config_description(name: str) -> str:
    """The leading ``#`` comment of a packaged config, joined into one line."""
    lines = []
    with open(config_path(name), encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def describe_configs() -> Dict[str, str]:
    """``{name: description}`` of every packaged config."""
    return {n: config_description(n) for n in config_names()}


def resolve_config(name_or_path: Union[str, "os.PathLike[str]"]) -> str:
    """A config argument -> the path or URL to read.

    URLs and existing local files are returned unchanged; a bare name (no folder
    part) is looked up among the packaged configs; any other path is returned
    unchanged so that the caller reports it as not found.
    """
    text = os.fspath(name_or_path)
    if "://" in text or os.path.exists(text):
        return text
    if os.sep not in text and "/" not in text:
        return config_path(text)
    return text


__all__ = ["config_names", "config_path", "config_description", "describe_configs",
           "resolve_config"]
