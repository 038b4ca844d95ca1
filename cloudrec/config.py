"""YAML configuration: a dataset, an iterator and its parameters, storage, training.

A config file has five top-level sections (all optional)::

    data:      {path_imgrec: ..., path_imgidx: ..., path_imglist: ..., path_root: ...}
    iterator:  ImageRecordIter        # or ImageIter / ImageDetIter / SegmentationIter
    params:    {batch_size: 256, data_shape: [3, 224, 224], ...}   # the iterator's kwargs
    storage:   {endpoint_url: ..., region: ..., anon: false, profile: ..., options: {...},
                key_env: AWS_ACCESS_KEY_ID, secret_env: AWS_SECRET_ACCESS_KEY, token_env: ...,
                cache: {mode: auto, dir: ~/.cache/cloudrec/shards, max_bytes: 50GB},
                fetch: {concurrency: 16, readahead_bytes: 128MB, max_gap: 256KB,
                        max_request: 16MB, window_bytes: 32MB, retries: 7, timeout: 30}}
    train:     {epochs: 90, lr: 0.1, ranks: 8, steps: 5000, model: resnet50}

Every key reaches the iterator or is an error that names it (and the closest
known key): ``data`` and ``params`` are checked against the iterator's own
keywords (:mod:`cloudrec.config_keys`), their values against its option
objects (:mod:`cloudrec.options`); ``storage`` becomes the iterator's
``storage_options`` and ``fetch_options`` (cache included); ``train`` is read
into :class:`TrainConfig` for the training script.  ``cfg.make_iterator()``
builds the iterator, ``cfg.iterator_kwargs()`` returns its keywords.

Values of the form ``${NAME}`` or ``${NAME:-default}`` are read from the
environment, so credentials never live in the file.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

import yaml

from cloudrec.config_keys import DATA_KEYS, ITERATORS, STORAGE_PARAMS, data_keys, param_keys
from cloudrec.errors import ConfigError
from cloudrec.options import FetchOptions, IteratorOptions, parse_size

__all__ = ["Config", "StorageConfig", "TrainConfig", "load_config", "config_from_dict",
           "expand_env", "parse_size"]

TOP_KEYS = ("data", "iterator", "params", "storage", "train")
STORAGE_KEYS = ("endpoint_url", "region", "anon", "key_env", "secret_env", "token_env",
                "profile", "cache", "fetch", "options")
CACHE_KEYS = ("mode", "dir", "max_bytes")
FETCH_KEYS = ("concurrency", "readahead_bytes", "window_bytes", "max_gap", "max_request",
              "max_waste", "retries", "timeout", "table", "table_stale")
TRAIN_KEYS = ("epochs", "lr", "ranks", "steps", "model")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")
_S3_SCHEMES = ("s3", "s3a")


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


@dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` section: what a training script reads (epochs, learning rate, ranks,
    steps per epoch, model name); None where the file leaves it to the script."""

    epochs: Optional[int] = None
    lr: Optional[float] = None
    ranks: int = 1
    steps: Optional[int] = None
    model: Optional[str] = None

    def __post_init__(self) -> None:
        for name, lo in (("epochs", 1), ("ranks", 1), ("steps", 1)):
            v = getattr(self, name)
            if v is None and name != "ranks":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"train.{name} must be an integer >= {lo}, got {v!r}")
        if self.lr is not None:
            if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) \
                    or not self.lr > 0:
                raise ConfigError(f"train.lr must be a number > 0, got {self.lr!r}")
            object.__setattr__(self, "lr", float(self.lr))
        if self.model is not None and not isinstance(self.model, str):
            raise ConfigError(f"train.model must be a name, got {self.model!r}")


@dataclass
class StorageConfig:
    """Where data lives and how to reach it: ``storage_options()`` feeds fsspec,
    ``fetch_options()`` the record fetcher (cache included)."""

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
    fetch: Dict[str, Any] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)

    def storage_options(self, url: Optional[str] = None) -> Dict[str, Any]:
        """s3fs-style options (credentials read from the environment now).  With ``url``
        the S3 settings are left out unless it is an ``s3://`` URL (a local or HDFS
        path gets only ``options``)."""
        opts: Dict[str, Any] = dict(self.options)
        if url is not None and _scheme(url) not in _S3_SCHEMES:
            return opts
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

    def fetch_options(self) -> FetchOptions:
        """storage.fetch and storage.cache as one :class:`FetchOptions`."""
        return FetchOptions(cache=self.cache_mode, cache_dir=self.cache_dir,
                            cache_max_bytes=self.cache_max_bytes, **self.fetch)


def _scheme(url: Any) -> str:
    text = os.fspath(url[0] if isinstance(url, (list, tuple)) and url else url)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def _fetch_dict(fo: FetchOptions) -> Dict[str, Any]:
    """The options set in ``fo`` as RecordFetcher keywords (every front end takes these)."""
    out: Dict[str, Any] = {}
    for name in ("concurrency", "readahead_bytes", "window_bytes", "max_gap", "max_request",
                 "max_waste", "cache_dir", "cache_max_bytes"):
        if getattr(fo, name) is not None:
            out[name] = getattr(fo, name)
    if fo.retry_policy() is not None:
        out["retry"] = fo.retry_policy()
    if fo.cache != "none":
        out["cache"] = fo.cache
    if not fo.strict:
        out["strict"] = False
    if fo.table is not None:
        out["table"] = fo.table
    if fo.table_stale != "rebuild":
        out["table_stale"] = fo.table_stale
    return out


@dataclass
class Config:
    """A loaded config file: see the module docstring for its layout.

    ``options`` holds the iterator's option objects as the file sets them
    (fetch/cache, order, partition, decode), ``train`` the training settings.
    """

    data: Dict[str, Any] = field(default_factory=dict)
    iterator: str = "ImageRecordIter"
    params: Dict[str, Any] = field(default_factory=dict)
    storage: StorageConfig = field(default_factory=StorageConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    options: IteratorOptions = field(default_factory=IteratorOptions)
    source: str = "<dict>"

    def iterator_kwargs(self, **overrides: Any) -> Dict[str, Any]:
        """Keyword arguments for the iterator: data paths + params + ``storage_options``
        and ``fetch_options`` (cache settings included) + overrides.  An overriding
        ``fetch_options`` (or ``cache``) is merged into the file's, key by key."""
        kw = {**self.data, **self.params}
        if "data_shape" in kw and isinstance(kw["data_shape"], list):
            kw["data_shape"] = tuple(kw["data_shape"])
        url = overrides.get("path_imgrec", self.data.get("path_imgrec"))
        so = self.storage.storage_options(url) if url else self.storage.storage_options()
        if so:
            kw["storage_options"] = so
        fetch = _fetch_dict(self.storage.fetch_options())
        extra = overrides.pop("fetch_options", None)
        if extra is not None:
            fetch.update(_fetch_dict(FetchOptions.coerce(extra)) if isinstance(extra, FetchOptions)
                         else dict(extra))
        if "cache" in overrides:
            fetch["cache"] = overrides.pop("cache")
        if fetch:
            kw["fetch_options"] = fetch
        kw.update(overrides)
        return kw

    def make_iterator(self, **overrides: Any) -> Any:
        """The configured iterator, built with :meth:`iterator_kwargs` (``overrides`` win)."""
        from cloudrec.config_keys import iterator_class
        return iterator_class(self.iterator)(**self.iterator_kwargs(**overrides))


def _storage(st: Mapping[str, Any], source: str) -> StorageConfig:
    _check_keys(st, STORAGE_KEYS, "storage", source)
    cache = st.get("cache") or {}
    _check_keys(cache, CACHE_KEYS, "storage.cache", source)
    fetch = st.get("fetch") or {}
    _check_keys(fetch, FETCH_KEYS, "storage.fetch", source)
    if not isinstance(st.get("options") or {}, Mapping):
        raise ConfigError(f"{source}: storage.options must be a mapping, "
                          f"got {type(st.get('options')).__name__}")
    if cache.get("mode", "none") not in ("none", "shards", "auto"):
        raise ConfigError(f"{source}: storage.cache.mode must be none, shards or auto, "
                          f"got {cache.get('mode')!r}")
    try:
        storage = StorageConfig(
            endpoint_url=st.get("endpoint_url") or None, region=st.get("region") or None,
            anon=bool(st.get("anon", False)), key_env=st.get("key_env", "AWS_ACCESS_KEY_ID"),
            secret_env=st.get("secret_env", "AWS_SECRET_ACCESS_KEY"),
            token_env=st.get("token_env"), profile=st.get("profile"),
            cache_mode=cache.get("mode", "none"),
            cache_dir=os.path.expanduser(cache["dir"]) if cache.get("dir") else None,
            cache_max_bytes=parse_size(cache.get("max_bytes"), "storage.cache.max_bytes"),
            fetch=dict(fetch), options=dict(st.get("options") or {}))
        storage.fetch_options()  # validates storage.fetch
    except ConfigError as exc:
        raise ConfigError(f"{source}: {_yaml_names(str(exc))}") from None
    return storage


def _yaml_names(msg: str) -> str:
    """FetchOptions' field names as the YAML keys that set them."""
    for f, key in (("cache_max_bytes", "storage.cache.max_bytes"),
                   ("cache_dir", "storage.cache.dir"), ("cache", "storage.cache.mode")):
        msg = msg.replace(f"FetchOptions.{f} ", f"{key} ")
    return msg.replace("FetchOptions.", "storage.fetch.")


def config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate a parsed mapping and build a Config (unknown keys raise ConfigError)."""
    raw = expand_env(dict(raw or {}))
    _check_keys(raw, TOP_KEYS, "the top level", source)
    iterator = raw.get("iterator", "ImageRecordIter")
    if iterator not in ITERATORS:
        raise _unknown(str(iterator), tuple(ITERATORS), "iterator", source)
    data = raw.get("data") or {}
    _check_keys(data, DATA_KEYS, "data", source)
    for key in data:
        if key not in data_keys(iterator):
            raise ConfigError(f"{source}: data.{key} is not used by {iterator} (it takes "
                              f"{', '.join(sorted(data_keys(iterator)))})")
    params = raw.get("params") or {}
    _check_keys(params, params.keys(), "params", source)  # must be a mapping
    train = raw.get("train") or {}
    _check_keys(train, TRAIN_KEYS, "train", source)
    storage = _storage(raw.get("storage") or {}, source)
    _validate_params(iterator, params, source)
    options = _options(iterator, dict(data), dict(params), storage, source)
    try:
        train_cfg = TrainConfig(**train)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return Config(data=dict(data), iterator=iterator, params=dict(params), storage=storage,
                  train=train_cfg, options=options, source=source)


def _validate_params(iterator: str, params: Mapping[str, Any], source: str) -> None:
    """Every params key must be one of the iterator's keywords (and not a storage one)."""
    known = sorted(param_keys(iterator))
    for key in params:
        if key in STORAGE_PARAMS:
            raise ConfigError(f"{source}: params.{key} is set by {STORAGE_PARAMS[key]}, "
                              "not by params")
        if key in DATA_KEYS:
            raise ConfigError(f"{source}: params.{key} belongs in the data section")
        if key not in known:
            raise _unknown(str(key), known, f"params of {iterator}", source)


def _options(iterator: str, data: Dict[str, Any], params: Dict[str, Any],
             storage: StorageConfig, source: str) -> IteratorOptions:
    """The iterator's option objects; for ImageRecordIter every params value is checked too."""
    from cloudrec.options_adapter import from_mxnet_kwargs
    kw = dict(params)
    try:
        if iterator == "ImageRecordIter" and data.get("path_imgrec"):
            from cloudrec.iterators.record_params import parse_kwargs
            check = {"batch_size": 1, "data_shape": (3, 224, 224), **data, **kw}
            parse_kwargs(check)  # no files are opened; values checked now, not at the first batch
        opts, _ = from_mxnet_kwargs({**kw, "fetch_options": storage.fetch_options()}, iterator)
    except ConfigError as exc:
        raise ConfigError(f"{source}: params: {exc}") from None
    return opts


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
