"""One adapter from a front end's flat keywords to :mod:`cloudrec.options`' objects.

:func:`from_mxnet_kwargs` turns a front end's flat keywords into the
four objects; it takes MXNet's names on the MXNet-named iterators and
cloudrec's own names (the same on every front end) everywhere:

==============  ======================  ===========================  ==============================
object.field    cloudrec keyword        ImageRecordIter (MXNet)      ImageIter / ImageDetIter (MXNet)
==============  ======================  ===========================  ==============================
fetch.*         ``fetch_options={..}``  same                         same
fetch.cache     ``cache``               same                         same
order.shuffle   ``shuffle``             ``shuffle``                  ``shuffle``
order.seed      ``seed``                ``seed``                     ``seed``
order.mode      ``shuffle_mode``        same                         same
order.<block>   ``order_options={..}``  same                         same
partition.rank  ``rank``                ``part_index``               ``part_index``
  .world_size   ``world_size``          ``num_parts``                ``num_parts``
  .part_mode    ``part_mode``           same                         same
  .last         ``last_batch``          ``round_batch`` (True:       ``last_batch_handle`` (pad:
                                        pad-next, False: fill)       pad, discard: drop, roll_over)
decode.threads  ``threads``             ``preprocess_threads``       ``num_threads``
  .max_pixels   ``max_pixels``          same                         same
  .truncated    ``truncated``           same                         same
  .reduce       ``decode_reduce``       same                         same
==============  ======================  ===========================  ==============================

SegmentationIter takes ImageRecordIter's ``preprocess_threads`` and ImageIter's
``last_batch_handle``.  A cloudrec name and its MXNet twin given together is an
error.  The objects themselves are accepted as ``fetch=``, ``order=``,
``partition=`` and ``decode=``; flat keywords then override their fields.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Dict, Mapping, Sequence, Tuple

from cloudrec.errors import ConfigError
from cloudrec.options import (DecodeOptions, FetchOptions, IteratorOptions, OrderOptions,
                              PartitionOptions)

__all__ = ["FRONT_ENDS", "from_mxnet_kwargs"]


#: per front end: its defaults, and its MXNet keyword -> (object, field) names
FRONT_ENDS: Dict[str, Dict[str, Any]] = {
    "ImageRecordIter": {"defaults": {"mode": "mxnet", "part_mode": "mxnet", "last": "pad-next",
                                     "threads": 4, "world_size": 1, "rank": 0},
                        "mxnet": {"num_parts": "world_size", "part_index": "rank",
                                  "round_batch": "last", "preprocess_threads": "threads"}},
    "ImageIter": {"defaults": {"mode": "global", "part_mode": "mxnet", "last": "pad",
                               "world_size": 1, "rank": 0},
                  "mxnet": {"num_parts": "world_size", "part_index": "rank",
                            "last_batch_handle": "last", "num_threads": "threads"}},
    "SegmentationIter": {"defaults": {"mode": "global", "part_mode": "even", "last": "pad",
                                      "threads": 2, "world_size": 1, "rank": 0},
                         "mxnet": {"num_parts": "world_size", "part_index": "rank",
                                   "last_batch_handle": "last", "preprocess_threads": "threads"}},
    "cloudrec": {"defaults": {}, "mxnet": {}},
}
FRONT_ENDS["ImageDetIter"] = FRONT_ENDS["ImageIter"]

#: cloudrec's flat keyword -> (object, field)
_COMMON = {"cache": ("fetch", "cache"), "shuffle": ("order", "shuffle"),
           "seed": ("order", "seed"), "shuffle_mode": ("order", "mode"),
           "rank": ("partition", "rank"), "world_size": ("partition", "world_size"),
           "part_mode": ("partition", "part_mode"), "last_batch": ("partition", "last"),
           "threads": ("decode", "threads"), "max_pixels": ("decode", "max_pixels"),
           "truncated": ("decode", "truncated"), "decode_reduce": ("decode", "reduce")}
_OBJECTS = {"fetch": FetchOptions, "order": OrderOptions, "partition": PartitionOptions,
            "decode": DecodeOptions}
_FIELD_OWNER = {"world_size": "partition", "rank": "partition", "last": "partition",
                "threads": "decode", "mode": "order", "part_mode": "partition"}
_LAST_HANDLE = {"pad": "pad", "discard": "drop", "roll_over": "roll_over"}


def _mxnet_value(front_end: str, key: str, value: Any, part_mode: str) -> Any:
    """An MXNet keyword's value in cloudrec's terms (MXNet passes strings too)."""
    if key == "round_batch":
        flag = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1")
        if part_mode == "even":
            return "pad" if flag else "fill"
        return "pad-next" if flag else "fill"
    if key == "last_batch_handle":
        if value not in _LAST_HANDLE:
            raise ConfigError(f"{front_end}: last_batch_handle must be 'pad', 'discard' or "
                              f"'roll_over', got {value!r}")
        return _LAST_HANDLE[value]
    return value


def _coerce_text(fname: str, value: Any) -> Any:
    """MXNet-style string values ("True", "4") of the flat keywords, as bools and ints."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if fname in ("shuffle", "reduce") and text in ("true", "1", "false", "0"):
        return text in ("true", "1")
    if fname in ("seed", "rank", "world_size", "threads", "max_pixels") and text.isdigit():
        return int(text)
    return value


def from_mxnet_kwargs(kwargs: Mapping[str, Any], front_end: str
                      ) -> Tuple[IteratorOptions, Dict[str, Any]]:
    """Split a front end's keywords into its :class:`IteratorOptions` and the rest.

    Takes cloudrec's names (module docstring), the front end's MXNet names, the
    objects as ``fetch=``/``order=``/``partition=``/``decode=``, ``fetch_options``
    (a mapping or FetchOptions) and ``order_options`` (block_size, ...).  Returns
    ``(options, rest)`` where ``rest`` holds every keyword not consumed.
    """
    if front_end not in FRONT_ENDS:
        raise ConfigError(f"unknown front end {front_end!r}; one of {', '.join(FRONT_ENDS)}")
    spec = FRONT_ENDS[front_end]
    rest = dict(kwargs)
    base = {name: rest.pop(name, None) for name in _OBJECTS}
    fields: Dict[str, Dict[str, Any]] = {name: {} for name in _OBJECTS}
    defaults = dict(spec["defaults"])
    for key, value in defaults.items():
        fields[_FIELD_OWNER[key]][key] = value
    for name, obj in base.items():
        if obj is not None:
            if not isinstance(obj, _OBJECTS[name]):
                raise ConfigError(f"{front_end}: {name}= must be a {_OBJECTS[name].__name__}, "
                                  f"got {type(obj).__name__}")
            fields[name].update(dataclasses.asdict(obj) if name != "fetch" else
                                {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    seen: Dict[Tuple[str, str], str] = {}
    part_mode = rest.get("part_mode", fields["partition"].get("part_mode", "even"))
    flat = [(k, _COMMON[k]) for k in list(rest) if k in _COMMON]
    flat += [(k, (_FIELD_OWNER[f], f)) for k, f in spec["mxnet"].items() if k in rest]
    for key, (obj, fname) in flat:
        value = rest.pop(key)
        if key in spec["mxnet"]:
            value = _mxnet_value(front_end, key, value, part_mode)
        value = _coerce_text(fname, value)
        if (obj, fname) in seen:
            raise ConfigError(f"{front_end}: {seen[(obj, fname)]!r} and {key!r} set the same "
                              "option; give one of them")
        seen[(obj, fname)] = key
        if value is None and fname in ("seed", "threads", "rank", "world_size"):
            continue  # None: the default
        fields[obj][fname] = value
    fo = rest.pop("fetch_options", None)
    fetch = FetchOptions.coerce(fo, cache=fields["fetch"].pop("cache", None),
                                **{k: v for k, v in fields["fetch"].items() if k != "retry"})
    if fields["fetch"].get("retry") is not None and fetch.retry is None:
        fetch = dataclasses.replace(fetch, retry=fields["fetch"]["retry"])
    oo = rest.pop("order_options", None) or {}
    if not isinstance(oo, Mapping):
        raise ConfigError(f"{front_end}: order_options must be a mapping, got {type(oo).__name__}")
    for key in oo:
        if key not in ("block_size", "window_blocks", "buffer_size"):
            raise _unknown_key(key, ("block_size", "window_blocks", "buffer_size"),
                               f"{front_end} order_options")
    opts = IteratorOptions(fetch=fetch, order=OrderOptions(**{**fields["order"], **oo}),
                           partition=PartitionOptions(**fields["partition"]),
                           decode=DecodeOptions(**fields["decode"]))
    return opts, rest


def _unknown_key(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return ConfigError(f"unknown key {key!r} in {where}{hint}")
