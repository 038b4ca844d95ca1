"""Which YAML keys each iterator takes: its data paths and its ``params``.

``load_config`` checks a config against these sets so that a key the iterator
would not use is an error naming it (and the closest accepted key), never a
setting silently dropped.  The sets come from the iterators themselves
(ImageRecordIter's ``known_keywords()``, the other constructors' signatures
plus their augmenter factories' keywords), so they cannot drift.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Dict, FrozenSet, Tuple

__all__ = ["ITERATORS", "DATA_KEYS", "STORAGE_PARAMS", "data_keys", "param_keys",
           "iterator_class"]

#: iterator name -> (module, name of its augmenter factory or None)
ITERATORS: Dict[str, Tuple[str, Any]] = {
    "ImageRecordIter": ("cloudrec.iterators.image_record", None),
    "ImageIter": ("cloudrec.iterators.image_iter", ("cloudrec.image.create", "CreateAugmenter")),
    "ImageDetIter": ("cloudrec.iterators.image_det",
                     ("cloudrec.image.det_augmenters", "CreateDetAugmenter")),
    "SegmentationIter": ("cloudrec.iterators.segmentation",
                         ("cloudrec.image.seg_augmenters", "CreateSegAugmenter")),
}
#: every data-path key a config may hold (each iterator takes a subset)
DATA_KEYS = ("path_imgrec", "path_imgidx", "path_imglist", "path_root")
#: iterator keywords the ``storage:`` section sets (never ``params``)
STORAGE_PARAMS = {"storage_options": "storage (endpoint_url, region, options, ...)",
                  "cache": "storage.cache.mode", "fetch_options": "storage.fetch"}
_NOT_YAML = ("aug_list",)  # Python objects: not expressible in a config
_cache: Dict[str, Tuple[FrozenSet[str], FrozenSet[str]]] = {}


def iterator_class(name: str) -> Callable[..., Any]:
    """The iterator class called ``name`` (one of :data:`ITERATORS`)."""
    module, _ = ITERATORS[name]
    return getattr(importlib.import_module(module), name)


def _named_params(fn: Callable[..., Any], skip: int = 0) -> FrozenSet[str]:
    ps = list(inspect.signature(fn).parameters.values())[skip:]
    return frozenset(p.name for p in ps if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


def _keys(name: str) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """(data keys, params keys) the iterator ``name`` accepts."""
    if name in _cache:
        return _cache[name]
    if name == "ImageRecordIter":
        from cloudrec.iterators.record_params import known_keywords
        accepted = frozenset(known_keywords())
    else:
        cls = iterator_class(name)
        accepted = _named_params(cls.__init__, skip=1)
        if name == "ImageDetIter":  # forwards ImageIter's cloudrec keywords to it
            module = importlib.import_module(ITERATORS[name][0])
            forwarded = getattr(module, "_ITER_KWARGS", None)
            if forwarded is None:
                base = iterator_class("ImageIter").__init__
                forwarded = [p.name for p in inspect.signature(base).parameters.values()
                             if p.kind == p.KEYWORD_ONLY]
            accepted |= frozenset(forwarded)
        aug_module, aug_name = ITERATORS[name][1]
        accepted |= _named_params(getattr(importlib.import_module(aug_module), aug_name), skip=1)
    data = frozenset(k for k in DATA_KEYS if k in accepted)
    params = frozenset(accepted - data - set(STORAGE_PARAMS) - set(_NOT_YAML))
    _cache[name] = (data, params)
    return _cache[name]


def data_keys(name: str) -> FrozenSet[str]:
    """The ``data:`` keys iterator ``name`` takes."""
    return _keys(name)[0]


def param_keys(name: str) -> FrozenSet[str]:
    """The ``params:`` keys iterator ``name`` takes (data paths and storage keywords excluded)."""
    return _keys(name)[1]
