"""cloudrec's own option names on every front end, through the one adapter.

Each MXNet-named iterator keeps its MXNet keywords (``num_parts``,
``preprocess_threads``, ``round_batch``, ``last_batch_handle``, ...).  When a
caller uses cloudrec's names instead (``rank``, ``world_size``, ``threads``,
``last_batch``) or passes the option objects (``fetch=``, ``order=``,
``partition=``, ``decode=``, from :mod:`cloudrec.options` or ``load_config``),
:func:`cloudrec.options_adapter.from_mxnet_kwargs` parses and validates them and
they are handed to the iterator as its own keywords.  MXNet-only code never
passes through here, so its behaviour is untouched.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

from cloudrec.errors import ConfigError

__all__ = ["CLOUDREC_NAMES", "front_end_kwargs", "adapt_explicit"]

#: keywords that only cloudrec's naming uses (their presence switches the adapter on)
CLOUDREC_NAMES = ("rank", "world_size", "threads", "last_batch", "fetch", "order", "partition",
                  "decode")

_LAST_HANDLE = {"pad": "pad", "drop": "discard", "roll_over": "roll_over"}


def _fetch_options(fetch: Any) -> Dict[str, Any]:
    """A FetchOptions as the fetch_options dict every front end takes (set fields only)."""
    out = {}
    for f in dataclasses.fields(fetch):
        value = getattr(fetch, f.name)
        if value != f.default and f.name != "cache":
            out[f.name] = value
    return out


def front_end_kwargs(kwargs: Mapping[str, Any], front_end: str) -> Dict[str, Any]:
    """``kwargs`` with cloudrec's names rewritten as ``front_end``'s own keywords."""
    if not any(k in kwargs for k in CLOUDREC_NAMES):
        return dict(kwargs)
    from cloudrec.options_adapter import from_mxnet_kwargs

    opts, rest = from_mxnet_kwargs(kwargs, front_end)
    f, o, p, d = opts.fetch, opts.order, opts.partition, opts.decode
    out = dict(rest)
    fetch = _fetch_options(f)
    if fetch:
        out["fetch_options"] = fetch
    if f.cache != "none":
        out["cache"] = f.cache
    order_opts = {k: getattr(o, k) for k in ("block_size", "window_blocks", "buffer_size")
                  if getattr(o, k) is not None}
    out.update(shuffle=o.shuffle, seed=o.seed, part_mode=p.part_mode,
               num_parts=p.world_size or 1, part_index=p.rank or 0)
    if front_end == "ImageRecordIter":
        out["shuffle_mode"] = o.mode
        out["round_batch"] = p.last != "fill"
        out["decode_reduce"] = d.reduce
        if d.threads is not None:
            out["preprocess_threads"] = d.threads
        if order_opts:
            raise ConfigError("ImageRecordIter: order options (block_size, ...) are not "
                              "supported; use shuffle_mode alone")
        return out
    if p.last not in _LAST_HANDLE:
        raise ConfigError(f"{front_end}: last_batch must be one of {', '.join(_LAST_HANDLE)}, "
                          f"got {p.last!r}")
    if front_end == "SegmentationIter":
        out.pop("part_mode")  # always cloudrec's global steps
        out["last_batch_handle"] = _LAST_HANDLE[p.last]
        if d.threads is not None:
            out["preprocess_threads"] = d.threads
        return out
    out["last_batch_handle"] = _LAST_HANDLE[p.last]
    if d.threads is not None:
        out["num_threads"] = d.threads
    if d.max_pixels is not None:
        out["max_pixels"] = d.max_pixels
    out["truncated"] = d.truncated
    return out


def adapt_explicit(kwargs: Dict[str, Any], explicit: Mapping[str, Any],
                   defaults: Mapping[str, Any], front_end: str) -> Dict[str, Any]:
    """For a constructor with explicit MXNet parameters: pop cloudrec's names from
    ``kwargs`` (its ``**kwargs``) and return the explicit parameters' new values.

    Only parameters that differ from ``defaults`` count as given, so ``rank=`` with
    ``part_index`` left at its default is not a conflict; leftovers go back to ``kwargs``.
    """
    names = {k: kwargs.pop(k) for k in list(kwargs) if k in CLOUDREC_NAMES}
    if not names:
        return dict(explicit)
    given = {k: v for k, v in explicit.items() if v != defaults[k]}
    mine = front_end_kwargs({**given, **names}, front_end)
    out = {k: mine.pop(k, defaults[k]) for k in explicit}
    kwargs.update(mine)
    return out
