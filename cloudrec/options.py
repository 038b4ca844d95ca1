"""The option objects every front end and every YAML config share.

Four small frozen dataclasses say how an iterator reads, orders, partitions
and decodes, so that one setting has one name and one default wherever it is
used (ImageRecordIter, ImageIter, ImageDetIter, SegmentationIter, the torch
datasets, ``load_config``):

* :class:`FetchOptions`   - how records are fetched and cached (RecordFetcher);
* :class:`OrderOptions`   - shuffle, order mode, seed (``epoch_order``/EpochSampler);
* :class:`PartitionOptions` - rank, world size, partition mode, last batch;
* :class:`DecodeOptions`  - decode threads, pixel limit, truncated JPEGs, DCT reduction.

Each validates itself and raises :class:`~cloudrec.errors.ConfigError` naming
the field.  :func:`cloudrec.options_adapter.from_mxnet_kwargs` builds them from a
front end's flat keywords (MXNet's names and cloudrec's; the name table is there);
``cloudrec.load_config`` builds them from YAML.
"""
from __future__ import annotations

import dataclasses
import difflib
import operator
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

from cloudrec.errors import ConfigError
from cloudrec.storage.retry import RetryPolicy

__all__ = ["FetchOptions", "OrderOptions", "PartitionOptions", "DecodeOptions",
           "IteratorOptions", "FETCH_DEFAULTS", "backend_of", "parse_size"]

_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?i?B?)?\s*$", re.I)
CACHE_MODES = ("none", "shards", "auto")
ORDER_MODES = ("mxnet", "global", "block", "shard", "none")
PART_MODES = ("mxnet", "even")
LAST_RULES = ("pad", "pad-next", "fill", "drop", "roll_over")
_EVEN_LAST = ("pad", "fill", "drop")  # 'fill': padded by the sampler, pad slots zeroed

#: RecordFetcher settings per backend: the one table every front end uses.  A local disk
#: wants few threads; object stores hide 10-50 ms per GET behind many; HDFS sits between.
#: Remote stores read without a cache cap merged gaps at 2% of the records' bytes
#: (``uncached_max_waste``): a gap there is other workers' records or later windows',
#: bytes that would cross the network twice.
FETCH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "local": {"concurrency": 4, "readahead_bytes": 128 << 20,
              "max_gap": 256 << 10, "max_request": 16 << 20},
    "hdfs": {"concurrency": 8, "readahead_bytes": 128 << 20,
             "max_gap": 256 << 10, "max_request": 16 << 20, "uncached_max_waste": 0.02},
    "object": {"concurrency": 16, "readahead_bytes": 128 << 20,
               "max_gap": 256 << 10, "max_request": 16 << 20, "uncached_max_waste": 0.02},
}
_LOCAL_SCHEMES = ("", "file", "local", "memory")
_HDFS_SCHEMES = ("hdfs", "viewfs", "webhdfs", "swebhdfs")


def parse_size(value: Union[int, str, None], name: str = "size") -> Optional[int]:
    """``'50GB'``/``'512MiB'``/``1024`` -> bytes (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a size such as 512MB, got {value!r}")
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigError(f"{name}: cannot parse size {value!r} (e.g. 512MB, 50GB)")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(unit or " "))


def backend_of(url: Any) -> str:
    """``'local'``, ``'hdfs'`` or ``'object'`` (S3, GCS, Azure, HTTP, ...) for one URL."""
    text = os.fspath(url) if not isinstance(url, str) else url
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in _LOCAL_SCHEMES:
        return "local"
    return "hdfs" if scheme in _HDFS_SCHEMES else "object"


def _backend_for(urls: Union[str, Sequence[Any]]) -> str:
    """The most remote backend among ``urls`` (its defaults suit every shard)."""
    if isinstance(urls, (str, os.PathLike)):
        text = os.fspath(urls)
        urls = [u for u in text.split(";") if u] or [text]
    kinds = {backend_of(u) for u in urls}
    return "object" if "object" in kinds else ("hdfs" if "hdfs" in kinds else "local")


def _int(obj: Any, name: str, lo: int, optional: bool = True) -> None:
    """Check (and normalise numpy integers of) the field ``name`` of a frozen ``obj``."""
    value = getattr(obj, name)
    if value is None and optional:
        return
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        v = None
    if v is None or v < lo:
        raise ConfigError(f"{type(obj).__name__}.{name} must be an integer >= {lo}, "
                          f"got {value!r}")
    object.__setattr__(obj, name, int(v))


def _choice(cls: str, name: str, value: Any, choices: Iterable[str]) -> None:
    if value not in tuple(choices):
        raise ConfigError(f"{cls}.{name} must be one of {', '.join(map(repr, choices))}, "
                          f"got {value!r}")


def _from_mapping(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``cls(**values)``, an unknown key being a ConfigError naming it (and the closest)."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping or {cls.__name__}, "
                          f"got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise ConfigError(f"unknown key {key!r} in {where}{hint}")
    return cls(**dict(values))


@dataclass(frozen=True)
class FetchOptions:
    """How records are fetched: RecordFetcher tuning, retries and the shard cache.

    ``None`` means "the backend's default" (:data:`FETCH_DEFAULTS`, chosen by the
    URLs' scheme), so a front end never keeps its own numbers.  ``retries`` is the
    number of retries after the first attempt and ``timeout`` the per-request limit
    in seconds; both build a RetryPolicy, or give ``retry`` (a RetryPolicy) itself.
    ``cache``: 'none' reads ranges remotely, 'shards' downloads whole shards into
    ``cache_dir`` (default ``$CLOUDREC_CACHE_DIR``) capped at ``cache_max_bytes``,
    'auto' does so for remote datasets that fit the cap.  Sizes may be strings ("32MB").
    ``strict=False`` passes RecordFetcher's lenient framing check through.
    ``table``: a dataset table (``cloudrec index --table``) the front end opens the
    shards from instead of their `.idx` files (one GET for the whole index; with
    ``--crc`` every record is checked against its CRC32); ``table_stale`` ('rebuild' or
    'error') says what a table older than its shards does.
    ``max_waste`` unset on a remote store without a cache caps merged gaps at 2%
    (``float('inf')``: unbounded).  ``spool`` (default on): DataLoader workers of a
    ``global``/``mxnet`` order without a cache share one download of each shard in
    ``/dev/shm`` while the dataset fits their read-ahead (:mod:`cloudrec.reader.spool`).
    """

    concurrency: Optional[int] = None
    readahead_bytes: Optional[int] = None
    window_bytes: Optional[int] = None
    max_gap: Optional[int] = None
    max_request: Optional[int] = None
    max_waste: Optional[float] = None
    retries: Optional[int] = None
    timeout: Optional[float] = None
    retry: Optional[RetryPolicy] = None
    cache: str = "none"
    cache_dir: Optional[str] = None
    cache_max_bytes: Optional[int] = None
    strict: bool = True
    table: Optional[str] = None
    table_stale: str = "rebuild"
    spool: bool = True

    def __post_init__(self) -> None:
        c = "FetchOptions"
        if not isinstance(self.spool, bool):
            raise ConfigError(f"{c}.spool must be true or false, got {self.spool!r}")
        if self.table is not None:
            if not isinstance(self.table, (str, os.PathLike)) or not os.fspath(self.table):
                raise ConfigError(f"{c}.table must be the path or URL of a dataset table "
                                  f"(cloudrec index --table), got {self.table!r}")
            object.__setattr__(self, "table", os.fspath(self.table))
        _choice(c, "table_stale", self.table_stale, ("rebuild", "error"))
        if not isinstance(self.strict, bool):
            raise ConfigError(f"{c}.strict must be true or false, got {self.strict!r}")
        for name in ("readahead_bytes", "window_bytes", "max_gap", "max_request",
                     "cache_max_bytes"):
            object.__setattr__(self, name, parse_size(getattr(self, name), f"{c}.{name}"))
        for name, lo in (("concurrency", 1), ("readahead_bytes", 1), ("window_bytes", 1),
                         ("max_gap", 0), ("max_request", 1), ("cache_max_bytes", 0),
                         ("retries", 0)):
            _int(self, name, lo)
        if self.max_waste is not None and (isinstance(self.max_waste, bool) or not isinstance(
                self.max_waste, (int, float)) or not self.max_waste >= 0):
            raise ConfigError(f"{c}.max_waste must be a fraction >= 0 (0.02: gaps within 2% "
                              f"of the records' bytes), got {self.max_waste!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(
                self.timeout, (int, float)) or not self.timeout > 0):
            raise ConfigError(f"{c}.timeout must be a number of seconds > 0, got {self.timeout!r}")
        if self.retry is not None:
            if not isinstance(self.retry, RetryPolicy):
                raise ConfigError(f"{c}.retry must be a RetryPolicy, got {type(self.retry).__name__}")
            if self.retries is not None or self.timeout is not None:
                raise ConfigError(f"{c}: give retry (a RetryPolicy) or retries/timeout, not both")
        _choice(c, "cache", self.cache, CACHE_MODES)
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise ConfigError(f"{c}.cache_dir must be a folder path, got {self.cache_dir!r}")
            object.__setattr__(self, "cache_dir", os.path.expanduser(os.fspath(self.cache_dir)))

    @classmethod
    def coerce(cls, value: Union[None, "FetchOptions", Mapping[str, Any]],
               where: str = "fetch_options", **defaults: Any) -> "FetchOptions":
        """A FetchOptions from None, a mapping of its fields or an instance; ``defaults``
        fill fields the value leaves unset (a conflicting value is an error)."""
        fo = cls() if value is None else _from_mapping(cls, value, where)
        given = {k: v for k, v in defaults.items() if v is not None and v != getattr(cls, k)}
        for key, v in given.items():
            mine = getattr(fo, key)
            if mine not in (None, getattr(cls, key)) and mine != v:
                raise ConfigError(f"{key} is given twice with different values ({v!r} and "
                                  f"{where}[{key!r}]={mine!r}); give it once")
        return dataclasses.replace(fo, **given) if given else fo

    def retry_policy(self) -> Optional[RetryPolicy]:
        """The retry policy these options ask for (None: RecordFetcher's default)."""
        if self.retry is not None:
            return self.retry
        if self.retries is None and self.timeout is None:
            return None
        kw: Dict[str, Any] = {}
        if self.retries is not None:
            kw["max_attempts"] = self.retries + 1
        if self.timeout is not None:
            kw["timeout"] = float(self.timeout)
        return RetryPolicy(**kw)

    def fetcher_kwargs(self, urls: Union[str, Sequence[Any]]) -> Dict[str, Any]:
        """Keyword arguments of ``RecordFetcher(ds, **kw)`` for data at ``urls``: the
        backend's defaults (:data:`FETCH_DEFAULTS`) with these options on top."""
        kw: Dict[str, Any] = dict(FETCH_DEFAULTS[_backend_for(urls)])
        for name in ("concurrency", "readahead_bytes", "window_bytes", "max_gap", "max_request",
                     "max_waste"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        kw["retry"] = self.retry_policy()
        kw["cache"] = self.cache
        kw["cache_dir"] = self.cache_dir
        kw["cache_max_bytes"] = self.cache_max_bytes
        if not self.strict:
            kw["strict"] = False
        return kw


@dataclass(frozen=True)
class OrderOptions:
    """The epoch order: a pure function of (seed, epoch) for every mode.

    ``mode``: 'mxnet' (ImageRecordIter's exact per-epoch permutations), 'global'
    (one permutation of every record), 'block'/'shard' (locality-friendly
    shuffles; ``block_size``, ``window_blocks``, ``buffer_size`` tune them), or
    'none'.  ``shuffle=False`` reads in file order whatever the mode.
    """

    shuffle: bool = False
    mode: str = "global"
    seed: int = 0
    block_size: Optional[int] = None
    window_blocks: Optional[int] = None
    buffer_size: Optional[int] = None

    def __post_init__(self) -> None:
        c = "OrderOptions"
        if not isinstance(self.shuffle, bool):
            raise ConfigError(f"{c}.shuffle must be true or false, got {self.shuffle!r}")
        _choice(c, "mode", self.mode, ORDER_MODES)
        if self.seed is None:
            object.__setattr__(self, "seed", 0)
        _int(self, "seed", 0, optional=False)
        for name in ("block_size", "window_blocks", "buffer_size"):
            _int(self, name, 1)

    @property
    def effective_mode(self) -> str:
        """The mode actually used: 'none' unless ``shuffle``."""
        return self.mode if self.shuffle else "none"

    def order_options(self) -> Dict[str, int]:
        """``order_options`` of EpochSampler / keywords of ``epoch_order`` (set ones only)."""
        return {k: getattr(self, k) for k in ("block_size", "window_blocks", "buffer_size")
                if getattr(self, k) is not None}

    def sampler_kwargs(self) -> Dict[str, Any]:
        """EpochSampler's ``seed``, ``mode`` and ``order_options``."""
        return {"seed": self.seed, "mode": self.effective_mode,
                "order_options": self.order_options()}


@dataclass(frozen=True)
class PartitionOptions:
    """Which share of the records this iterator reads, and how the last batch ends.

    ``rank``/``world_size`` (MXNet: ``part_index``/``num_parts``; None = from
    torch.distributed or the environment).  ``part_mode``: 'mxnet' cuts MXNet's
    fixed parts (ImageRecordIter: by count with an `.idx`, by bytes without;
    ImageIter: ``N // parts``), 'even' deals cloudrec's global steps, so every
    rank gets the same batch count and a state resumes on any world size.
    ``last``: 'pad' (wrap to the start), 'pad-next' (ImageRecordIter's
    round_batch: pad from the next epoch), 'fill' (pad slots zero-filled, true
    pad count), 'drop', 'roll_over' (carry into the next epoch); 'even' takes
    'pad', 'fill' or 'drop'.
    """

    rank: Optional[int] = None
    world_size: Optional[int] = None
    part_mode: str = "even"
    last: str = "pad"

    def __post_init__(self) -> None:
        c = "PartitionOptions"
        _int(self, "world_size", 1)
        _int(self, "rank", 0)
        ws = 1 if self.world_size is None else self.world_size
        if self.rank is not None and self.rank >= ws:
            raise ConfigError(f"{c}.rank must be in [0, world_size={ws}), got {self.rank}")
        _choice(c, "part_mode", self.part_mode, PART_MODES)
        _choice(c, "last", self.last, _EVEN_LAST if self.part_mode == "even" else LAST_RULES)

    def partition_name(self, front_end: str, indexed: bool = True) -> str:
        """EpochSampler's ``partition`` for ``front_end``: 'steps' under 'even', else the
        front end's fixed MXNet partition ('mxnet-count', 'mxnet-bytes' or 'floor')."""
        if self.part_mode == "even":
            return "steps"
        if front_end == "ImageRecordIter":
            return "mxnet-count" if indexed else "mxnet-bytes"
        return "floor"

    def sampler_kwargs(self) -> Dict[str, Any]:
        """EpochSampler's ``rank``, ``world_size`` and ``last``."""
        last = "pad" if (self.part_mode == "even" and self.last == "fill") else self.last
        return {"rank": self.rank, "world_size": self.world_size, "last": last}


@dataclass(frozen=True)
class DecodeOptions:
    """How images are decoded: threads, the decompression-bomb limit, truncated JPEGs.

    ``threads`` None = the front end's default.  ``max_pixels`` None = the
    process-wide limit (``cloudrec.image.set_max_pixels``), 0 = no limit.
    ``truncated``: 'error' refuses a JPEG cut inside its scan data, 'mxnet'
    returns what libmxnet returned.  ``reduce``: let libjpeg decode big JPEGs at
    1/2, 1/4 or 1/8 scale when they are resized anyway (faster, not bit-identical).
    """

    threads: Optional[int] = None
    max_pixels: Optional[int] = None
    truncated: str = "error"
    reduce: bool = False

    def __post_init__(self) -> None:
        c = "DecodeOptions"
        _int(self, "threads", 1)
        _int(self, "max_pixels", 0)
        _choice(c, "truncated", self.truncated, ("error", "mxnet"))
        if not isinstance(self.reduce, bool):
            raise ConfigError(f"{c}.reduce must be true or false, got {self.reduce!r}")


@dataclass(frozen=True)
class IteratorOptions:
    """The four option objects of one iterator."""

    fetch: FetchOptions = field(default_factory=FetchOptions)
    order: OrderOptions = field(default_factory=OrderOptions)
    partition: PartitionOptions = field(default_factory=PartitionOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
