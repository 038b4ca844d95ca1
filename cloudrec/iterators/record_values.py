"""MXNet-style keyword values to typed ones: MXNet's Python front end passes every
ImageRecordIter keyword as a string (``"(3, 224, 224)"``, ``"True"``, ``"0.5"``), so each
is converted to its field's type, or refused with a ConfigError naming the keyword."""
from __future__ import annotations

import ast
from typing import Any, Tuple

import numpy as np

from cloudrec.errors import ConfigError

__all__ = ["coerce"]


def _to_bool(name: str, v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "false", "0"):
        return v.strip().lower() in ("true", "1")
    raise ConfigError(f"ImageRecordIter: {name} must be a bool, got {v!r}")


def _to_int(name: str, v: Any) -> int:
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    try:
        if isinstance(v, str):
            v = float(v.strip()) if "." in v or "e" in v.lower() else int(v.strip())
        if isinstance(v, float) and not float(v).is_integer():
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"ImageRecordIter: {name} must be an integer, got {v!r}") from None


def _to_float(name: str, v: Any) -> float:
    try:
        out = float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError):
        raise ConfigError(f"ImageRecordIter: {name} must be a number, got {v!r}") from None
    if not np.isfinite(out) and name not in ("max_img_size",):
        raise ConfigError(f"ImageRecordIter: {name} must be finite, got {v!r}")
    return out


def _to_int_tuple(name: str, v: Any) -> Tuple[int, ...]:
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return ()
        try:
            v = ast.literal_eval(s if s[0] in "([" else "(" + s + ",)")
        except (ValueError, SyntaxError):
            raise ConfigError(f"ImageRecordIter: cannot parse {name}={v!r}") from None
    if isinstance(v, (int, np.integer)):
        v = (v,)
    try:
        return tuple(_to_int(name, x) for x in v)
    except TypeError:
        raise ConfigError(f"ImageRecordIter: {name} must be a tuple of ints, got {v!r}") from None


def coerce(name: str, default: Any, value: Any) -> Any:
    """Convert ``value`` to the type of the field ``name`` (MXNet passes strings)."""
    if name in ("data_shape", "rotate_list"):
        return _to_int_tuple(name, value)
    if name in ("seed_aug",):
        return None if value is None or value == "None" else _to_int(name, value)
    if name == "min_aspect_ratio":
        return None if value is None or value == "None" else _to_float(name, value)
    if name == "dtype":
        if value is None or value == "None":
            return None
        try:
            return np.dtype(value).name
        except TypeError:
            raise ConfigError(f"ImageRecordIter: unknown dtype {value!r}") from None
    if name in ("storage_options", "fetch_options", "path_imgrec", "path_imgidx"):
        return value
    if isinstance(default, bool):
        return _to_bool(name, value)
    if isinstance(default, int):
        return _to_int(name, value)
    if isinstance(default, float):
        return _to_float(name, value)
    if isinstance(default, str):
        if not isinstance(value, str):
            if hasattr(value, "__fspath__"):
                return str(value.__fspath__())
            raise ConfigError(f"ImageRecordIter: {name} must be a string, got {value!r}")
        return value
    return value
