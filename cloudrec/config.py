"""YAML configuration: a dataset, an iterator and its parameters, and storage.

A config file has four top-level sections (all optional)::

    data:      {path_imgrec: ..., path_imgidx: ..., path_imglist: ...}
    iterator:  ImageRecordIter            # or ImageIter / ImageDetIter
    params:    {batch_size: 256, data_shape: [3, 224, 224], ...}   # the iterator's kwargs
    storage:   {endpoint_url: ..., region: ..., anon: false,
                key_env: AWS_ACCESS_KEY_ID, secret_env: AWS_SECRET_ACCESS_KEY,
                cache: {mode: auto, dir: ~/.cache/cloudrec/shards, max_bytes: 50GB}}

Values of the form ``${NAME}`` or ``${NAME:-default}`` are read from the
environment, so credentials never live in the file.  Any unknown key is an
error that names it (and the closest known key), because a misspelt option
that is silently ignored is how MXNet users lost days.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

import yaml

from cloudrec.errors import ConfigError

TOP_KEYS = ("data", "iterator", "params", "storage", "train")
DATA_KEYS = ("path_imgrec", "path_imgidx", "path_imglist", "path_root")
STORAGE_KEYS = ("endpoint_url", "region", "anon", "key_env", "secret_env", "token_env",
                "profile", "cache", "options")
CACHE_KEYS = ("mode", "dir", "max_bytes")
TRAIN_KEYS = ("epochs", "lr", "ranks", "steps", "model")
ITERATORS = ("ImageRecordIter", "ImageIter", "ImageDetIter")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?i?B?)?\s*$", re.I)


def _unknown(key: str, known, where: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"{source}: unknown key {key!r} in {where}{hint}")


def _check_keys(section: Mapping, known, where: str, source: str) -> None:
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(section).__name__}")
    for key in section:
        if key not in known:
            raise _unknown(str(key), known, where, source)


def expand_env(value: Any) -> Any:
    """Replace ``${NAME}``/``${NAME:-default}`` in strings, recursively."""
    if isinstance(value, str):
        def sub(m: "re.Match[str]") -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set (used as ${{{name}}})")
        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value


def parse_size(value: Union[int, str, None]) -> Optional[int]:
    """``'50GB'``/``'512MiB'``/``1024`` -> bytes."""
    if value is None or isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"cannot parse size {value!r} (e.g. 512MB, 50GB)")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(unit or " "))


@dataclass
class StorageConfig:
    """Where data lives and how to reach it; ``storage_options()`` feeds fsspec."""

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    anon: bool = False
    key_env: str = "AWS_ACCESS_KEY_ID"
    secret_env: str = "AWS_SECRET_ACCESS_KEY"
    token_env: Optional[str] = None
    profile: Optional[str] = None
    cache_mode: str = "none"
    cache_dir: Optional[str] = None
    cache_max_bytes: Optional[int] = None
    options: Dict[str, Any] = field(default_factory=dict)

    def storage_options(self) -> Dict[str, Any]:
        """s3fs-style options (credentials read from the environment now)."""
        opts: Dict[str, Any] = dict(self.options)
        if self.endpoint_url:
            opts.setdefault("client_kwargs", {})["endpoint_url"] = self.endpoint_url
        if self.region:
            opts.setdefault("client_kwargs", {})["region_name"] = self.region
        if self.anon:
            opts["anon"] = True
        if self.profile:
            opts["profile"] = self.profile
        if os.environ.get(self.key_env) and os.environ.get(self.secret_env):
            opts["key"], opts["secret"] = os.environ[self.key_env], os.environ[self.secret_env]
        if self.token_env and os.environ.get(self.token_env):
            opts["token"] = os.environ[self.token_env]
        return opts


@dataclass
class Config:
    """A loaded config file: see the module docstring for its layout."""

    data: Dict[str, Any] = field(default_factory=dict)
    iterator: str = "ImageRecordIter"
    params: Dict[str, Any] = field(default_factory=dict)
    storage: StorageConfig = field(default_factory=StorageConfig)
    train: Dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"

    def iterator_kwargs(self, **overrides: Any) -> Dict[str, Any]:
        """Keyword arguments for the iterator: data paths + params + overrides."""
        kw = {**self.data, **self.params, **overrides}
        if "data_shape" in kw and isinstance(kw["data_shape"], list):
            kw["data_shape"] = tuple(kw["data_shape"])
        return kw


def config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate a parsed mapping and build a Config (unknown keys raise ConfigError)."""
    raw = expand_env(dict(raw or {}))
    _check_keys(raw, TOP_KEYS, "the top level", source)
    data = raw.get("data") or {}
    _check_keys(data, DATA_KEYS, "data", source)
    iterator = raw.get("iterator", "ImageRecordIter")
    if iterator not in ITERATORS:
        raise _unknown(str(iterator), ITERATORS, "iterator", source)
    params = raw.get("params") or {}
    _check_keys(params, params.keys(), "params", source)  # must be a mapping
    train = raw.get("train") or {}
    _check_keys(train, TRAIN_KEYS, "train", source)
    st = raw.get("storage") or {}
    _check_keys(st, STORAGE_KEYS, "storage", source)
    cache = st.get("cache") or {}
    _check_keys(cache, CACHE_KEYS, "storage.cache", source)
    if not isinstance(st.get("options") or {}, Mapping):
        raise ConfigError(f"{source}: storage.options must be a mapping, "
                          f"got {type(st.get('options')).__name__}")
    if cache.get("mode", "none") not in ("none", "shards", "auto"):
        raise ConfigError(f"{source}: storage.cache.mode must be none, shards or auto, "
                          f"got {cache.get('mode')!r}")
    storage = StorageConfig(
        endpoint_url=st.get("endpoint_url") or None, region=st.get("region") or None,
        anon=bool(st.get("anon", False)), key_env=st.get("key_env", "AWS_ACCESS_KEY_ID"),
        secret_env=st.get("secret_env", "AWS_SECRET_ACCESS_KEY"), token_env=st.get("token_env"),
        profile=st.get("profile"), cache_mode=cache.get("mode", "none"),
        cache_dir=os.path.expanduser(cache["dir"]) if cache.get("dir") else None,
        cache_max_bytes=parse_size(cache.get("max_bytes")), options=dict(st.get("options") or {}))
    _validate_params(iterator, params, source)
    return Config(data=dict(data), iterator=iterator, params=dict(params), storage=storage,
                  train=dict(train), source=source)


def _validate_params(iterator: str, params: Mapping[str, Any], source: str) -> None:
    """Check iterator parameter names against the iterator's own list, when it has one."""
    known = None
    if iterator == "ImageRecordIter":
        try:
            from cloudrec.iterators.record_params import known_keywords
            known = tuple(known_keywords())
        except ImportError:
            known = None
    if known:
        for key in params:
            if key not in known:
                raise _unknown(str(key), known, f"params of {iterator}", source)


def _yaml_problem(exc: Exception) -> str:
    """A PyYAML error on one line: what is wrong and where (1-based line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        problem = f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    cmark, context = getattr(exc, "context_mark", None), getattr(exc, "context", None)
    if context and cmark is not None:
        problem += f" ({context} from line {cmark.line + 1}, column {cmark.column + 1})"
    return problem


def load_config(path_or_dict: Union[str, os.PathLike, Mapping[str, Any]]) -> Config:
    """Load a YAML config: a packaged name (``"imagenet-train"``, see ``cloudrec config
    list``), a local path, any fsspec URL, or a dict."""
    if isinstance(path_or_dict, Mapping):
        return config_from_dict(path_or_dict)
    from cloudrec.configs import resolve_config
    path = resolve_config(path_or_dict)
    from cloudrec.storage.fs import resolve
    fs, p = resolve(path)
    try:
        with fs.open(p, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): is this a YAML file?") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(raw or {}, source=path)
