"""ImageRecordIter's keyword arguments, grouped as MXNet's C++ parameter structs.

MXNet registers ImageRecordIter with the union of six parameter structs
(spec §2.1); the same grouping here keeps each concern small.  ``parse_kwargs``
turns the flat keyword dict into an :class:`IterParams` bundle, coerces
MXNet-style string values (``"(3, 224, 224)"``, ``"True"``), checks every
value and raises :class:`ConfigError` naming the offending argument.  Unlike
MXNet (which silently ignored them), an unknown keyword raises and names the
closest known one.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from cloudrec.errors import ConfigError
from cloudrec.iterators.record_values import coerce as _coerce

__all__ = ["ImageRecParserParam", "ImageRecordParam", "BatchParam", "PrefetcherParam",
           "DefaultImageAugmentParam", "ImageNormalizeParam", "CloudrecParam", "IterParams",
           "parse_kwargs", "known_keywords"]


@dataclass
class ImageRecParserParam:
    """Where the records are and how they are parsed (MXNet ImageRecParserParam)."""

    path_imgrec: Any = ""
    path_imglist: str = ""
    path_imgidx: Any = ""
    aug_seq: str = "aug_default"
    label_width: int = 1
    data_shape: Tuple[int, int, int] = ()
    preprocess_threads: int = 4
    verbose: bool = True
    num_parts: int = 1
    part_index: int = 0
    device_id: int = 0
    shuffle_chunk_size: int = 0
    shuffle_chunk_seed: int = 0
    seed_aug: Optional[int] = None

    def __repr__(self) -> str:  # a URL password never shows (path_imgrec may hold one)
        from cloudrec.storage.redact import redact_options
        shown = redact_options({f.name: getattr(self, f.name) for f in fields(self)})
        return "ImageRecParserParam(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


@dataclass
class ImageRecordParam:
    """Record order: shuffle and its seed (MXNet ImageRecordParam)."""

    shuffle: bool = False
    seed: int = 0


@dataclass
class BatchParam:
    """Batch size and what happens to the last partial batch (MXNet BatchParam)."""

    batch_size: int = 0
    round_batch: bool = True


@dataclass
class PrefetcherParam:
    """Prefetch depth, device and output dtype (MXNet PrefetcherParam)."""

    prefetch_buffer: int = 4
    ctx: str = "gpu"
    dtype: Optional[str] = None


@dataclass
class DefaultImageAugmentParam:
    """The C++ ``aug_default`` augmenter's parameters (spec §2.3)."""

    resize: int = -1
    rand_crop: bool = False
    random_resized_crop: bool = False
    max_rotate_angle: int = 0
    max_aspect_ratio: float = 0.0
    min_aspect_ratio: Optional[float] = None
    max_shear_ratio: float = 0.0
    max_crop_size: int = -1
    min_crop_size: int = -1
    max_random_scale: float = 1.0
    min_random_scale: float = 1.0
    max_random_area: float = 1.0
    min_random_area: float = 1.0
    max_img_size: float = 1e10
    min_img_size: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    pca_noise: float = 0.0
    random_h: int = 0
    random_s: int = 0
    random_l: int = 0
    rotate: int = -1
    fill_value: int = 255
    inter_method: int = 1
    pad: int = 0
    rotate_list: Tuple[int, ...] = ()

    def aspect_bounds(self) -> Tuple[float, float]:
        """(lo, hi) of the width/height ratio, as MXNet derives them."""
        if self.min_aspect_ratio is not None:
            return float(self.min_aspect_ratio), float(self.max_aspect_ratio)
        return 1.0 - self.max_aspect_ratio, 1.0 + self.max_aspect_ratio


@dataclass
class ImageNormalizeParam:
    """Mirror and normalisation applied while writing into the batch (MXNet ImageNormalizeParam)."""

    mirror: bool = False
    rand_mirror: bool = False
    mean_img: str = ""
    mean_r: float = 0.0
    mean_g: float = 0.0
    mean_b: float = 0.0
    mean_a: float = 0.0
    std_r: float = 1.0
    std_g: float = 1.0
    std_b: float = 1.0
    std_a: float = 1.0
    scale: float = 1.0
    max_random_contrast: float = 0.0
    max_random_illumination: float = 0.0


@dataclass
class CloudrecParam:
    """cloudrec's own options (not in MXNet).

    ``layout``: 'NCHW' (MXNet) or 'NHWC' (cheapest to hand to a GPU with uint8).
    ``shuffle_mode``: 'mxnet' reproduces MXNet's per-epoch permutations exactly;
    'global'/'block'/'shard' use the reader layer's orders.
    ``decode_reduce``: the fast path: libjpeg decodes at 1/2, 1/4 or 1/8 scale when
    the image is at least that much larger than needed, with its fast IDCT, and
    only the crop window's source region is resized (faster, not bit-identical:
    within a few levels; the labels, order and shapes are the same).
    ``part_mode``: 'mxnet' splits like MXNet (consecutive records by count with
    an `.idx`, by bytes without; parts may differ in batch count); 'even' cuts
    one global epoch order into equal shares so that every part yields the same
    number of batches (what distributed training needs, apache/mxnet#17651).
    ``worker``/``num_workers``: the DataLoader worker of this part that reads
    (cloudrec.torch sets them; under 'even' each worker takes its own batches).
    Secrets (storage_options keys, URL passwords) never appear in the repr.
    """

    data_name: str = "data"
    label_name: str = "softmax_label"
    layout: str = "NCHW"
    shuffle_mode: str = "mxnet"
    part_mode: str = "mxnet"
    decode_reduce: bool = False
    storage_options: Optional[Dict[str, Any]] = None
    cache: str = "none"
    fetch_options: Optional[Dict[str, Any]] = None
    worker: int = 0
    num_workers: int = 1

    def __repr__(self) -> str:
        from cloudrec.storage.redact import redact_options
        shown = redact_options({f.name: getattr(self, f.name) for f in fields(self)})
        return "CloudrecParam(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


@dataclass
class IterParams:
    """Every parameter group of one ImageRecordIter."""

    parser: ImageRecParserParam = field(default_factory=ImageRecParserParam)
    record: ImageRecordParam = field(default_factory=ImageRecordParam)
    batch: BatchParam = field(default_factory=BatchParam)
    prefetch: PrefetcherParam = field(default_factory=PrefetcherParam)
    aug: DefaultImageAugmentParam = field(default_factory=DefaultImageAugmentParam)
    norm: ImageNormalizeParam = field(default_factory=ImageNormalizeParam)
    extra: CloudrecParam = field(default_factory=CloudrecParam)

    @property
    def data_shape(self) -> Tuple[int, int, int]:
        return self.parser.data_shape

    @property
    def out_dtype(self) -> np.dtype:
        return np.dtype(self.prefetch.dtype or "float32")


_GROUPS = {"parser": ImageRecParserParam, "record": ImageRecordParam, "batch": BatchParam,
           "prefetch": PrefetcherParam, "aug": DefaultImageAugmentParam,
           "norm": ImageNormalizeParam, "extra": CloudrecParam}
# keywords that several MXNet structs declare; they go to every group that has them
_SHARED = {"verbose", "seed", "data_shape"}
_IGNORED = {"verbose"}  # accepted, only affects logging
_DTYPES = {"float32", "uint8", "int8", "float16", "float64"}
_INTER = {0, 1, 2, 3, 4, 9, 10}


def known_keywords() -> List[str]:
    """All keyword names ImageRecordIter accepts."""
    names = {"verbose"}
    for cls in _GROUPS.values():
        names.update(f.name for f in fields(cls))
    return sorted(names)


def parse_kwargs(kwargs: Dict[str, Any]) -> IterParams:
    """Build and validate :class:`IterParams` from ImageRecordIter's keyword arguments."""
    known = set(known_keywords())
    for k in kwargs:
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"ImageRecordIter: unknown keyword argument {k!r}{hint} "
                              "(MXNet ignored unknown keywords; cloudrec refuses them)")
    groups = {}
    for gname, cls in _GROUPS.items():
        vals = {}
        for f in fields(cls):
            if f.name in kwargs:
                default = f.default if f.default is not None else None
                vals[f.name] = _coerce(f.name, default, kwargs[f.name])
        groups[gname] = cls(**vals)
    params = IterParams(**groups)
    validate(params)
    return params


def validate(p: IterParams) -> None:
    """Check every value; raise ConfigError naming the argument and the rule it breaks."""
    def bad(msg: str) -> None:
        raise ConfigError("ImageRecordIter: " + msg)

    ps, a, n = p.parser, p.aug, p.norm
    if not ps.path_imgrec:
        bad("path_imgrec is required (the .rec file or files)")
    if not ps.data_shape:
        bad("data_shape is required, e.g. data_shape=(3, 224, 224)")
    if len(ps.data_shape) != 3 or min(ps.data_shape) <= 0:
        bad(f"data_shape must be 3 positive ints (C, H, W), got {ps.data_shape}")
    if ps.data_shape[0] not in (1, 3, 4):
        bad(f"Invalid output shape {list(ps.data_shape)}: channels must be 1, 3 or 4")
    if p.batch.batch_size <= 0:
        bad(f"batch_size is required and must be >= 1, got {p.batch.batch_size}")
    if ps.label_width < 1:
        bad(f"label_width must be >= 1, got {ps.label_width}")
    if ps.preprocess_threads < 1:
        bad(f"preprocess_threads must be >= 1, got {ps.preprocess_threads}")
    if ps.num_parts < 1:
        bad(f"num_parts must be >= 1, got {ps.num_parts}")
    if not 0 <= ps.part_index < ps.num_parts:
        bad(f"part_index must be in [0, num_parts={ps.num_parts}), got {ps.part_index}")
    if ps.aug_seq.strip() not in ("aug_default", ""):
        names = [s.strip() for s in ps.aug_seq.split(",") if s.strip()]
        if names != ["aug_default"]:
            bad(f"aug_seq={ps.aug_seq!r}: only 'aug_default' is supported")
    if ps.shuffle_chunk_size < 0:
        bad("shuffle_chunk_size must be >= 0")
    if p.prefetch.prefetch_buffer < 1:
        bad(f"prefetch_buffer must be >= 1, got {p.prefetch.prefetch_buffer}")
    if p.prefetch.ctx not in ("cpu", "gpu"):
        bad(f"ctx must be 'cpu' or 'gpu', got {p.prefetch.ctx!r}")
    if p.prefetch.dtype is not None and p.prefetch.dtype not in _DTYPES:
        bad(f"unknown dtype {p.prefetch.dtype!r}: use one of {sorted(_DTYPES)}")
    # augmentation
    if a.inter_method not in _INTER:
        bad(f"invalid inter_method {a.inter_method}: valid values are 0-4, 9, 10")
    if a.resize == 0 or a.resize < -1:
        bad(f"resize must be -1 (off) or a positive shorter-edge length, got {a.resize}")
    if a.pad < 0:
        bad("pad must be >= 0")
    if not 0 <= a.fill_value <= 255:
        bad(f"fill_value must be in [0, 255], got {a.fill_value}")
    for name in ("max_rotate_angle", "max_shear_ratio", "max_aspect_ratio", "brightness",
                 "contrast", "saturation", "pca_noise", "random_h", "random_s", "random_l"):
        if getattr(a, name) < 0:
            bad(f"{name} must be >= 0, got {getattr(a, name)}")
    lo, hi = a.aspect_bounds()
    if lo <= 0 or lo > hi:
        bad(f"aspect ratio bounds [{lo}, {hi}] must satisfy 0 < min <= max "
            "(max_aspect_ratio must be < 1 when min_aspect_ratio is unset)")
    if a.min_random_scale <= 0 or a.min_random_scale > a.max_random_scale:
        bad("need 0 < min_random_scale <= max_random_scale")
    if a.min_random_area <= 0 or a.min_random_area > a.max_random_area:
        bad("need 0 < min_random_area <= max_random_area")
    if a.min_img_size < 0 or a.min_img_size > a.max_img_size:
        bad("need 0 <= min_img_size <= max_img_size")
    if (a.max_crop_size != -1) or (a.min_crop_size != -1):
        if a.min_crop_size <= 0 or a.max_crop_size < a.min_crop_size:
            bad(f"crop sizes need 0 < min_crop_size <= max_crop_size, got "
                f"[{a.min_crop_size}, {a.max_crop_size}] (set both)")
    if a.random_resized_crop:
        if a.min_random_scale != 1 or a.max_random_scale != 1 or a.max_crop_size != -1 \
                or a.min_crop_size != -1 or a.rand_crop:
            bad("random_resized_crop conflicts with min/max_random_scale, min/max_crop_size "
                "and rand_crop")
    if a.max_random_area > 1:
        bad("max_random_area must be <= 1")
    # normalisation
    for name in ("std_r", "std_g", "std_b", "std_a"):
        if getattr(n, name) == 0:
            bad(f"{name} must be non-zero")
    if n.max_random_contrast < 0 or n.max_random_illumination < 0:
        bad("max_random_contrast and max_random_illumination must be >= 0")
    # cloudrec extras
    x = p.extra
    if x.layout not in ("NCHW", "NHWC"):
        bad(f"layout must be 'NCHW' or 'NHWC', got {x.layout!r}")
    if x.shuffle_mode not in ("mxnet", "global", "block", "shard"):
        bad(f"shuffle_mode must be 'mxnet', 'global', 'block' or 'shard', got {x.shuffle_mode!r}")
    if x.part_mode not in ("mxnet", "even"):
        bad(f"part_mode must be 'mxnet' or 'even', got {x.part_mode!r}")
    if x.cache not in ("none", "shards", "auto"):
        bad(f"cache must be 'none', 'shards' or 'auto', got {x.cache!r}")
    if x.num_workers < 1 or not 0 <= x.worker < x.num_workers:
        bad(f"worker must be in [0, num_workers), got worker={x.worker} num_workers={x.num_workers}")
    if x.num_workers > 1 and x.part_mode != "even":
        bad("worker/num_workers need part_mode='even' (MXNet's parts are not split further)")
