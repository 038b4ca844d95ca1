"""``mx.gluon.utils.split_and_load``: what training loops call on every batch."""
from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np

from cloudrec.mxnet_base import NDArray

__all__ = ["split_data", "split_and_load"]


def split_data(data: Any, num_slice: int, batch_axis: int = 0, even_split: bool = True
               ) -> List[NDArray]:
    """``num_slice`` slices along ``batch_axis`` (the last takes the remainder)."""
    arr = np.asarray(data)
    size = arr.shape[batch_axis]
    if even_split and size % num_slice != 0:
        raise ValueError(f"data with shape {arr.shape} cannot be evenly split into {num_slice} "
                         f"slices along axis {batch_axis}. Use a batch size that's multiple of "
                         f"{num_slice} or set even_split=False to allow uneven partitioning of "
                         "data.")
    if num_slice == 1:
        return [arr.view(NDArray)]
    step = size // num_slice
    if not even_split and size < num_slice:
        step, num_slice = 1, size
    bounds = [i * step for i in range(num_slice)] + [size]
    return [np.take(arr, range(bounds[i], bounds[i + 1]), axis=batch_axis).view(NDArray)
            for i in range(num_slice)]


def split_and_load(data: Any, ctx_list: Sequence[Any], batch_axis: int = 0,
                   even_split: bool = True) -> List[NDArray]:
    """One slice per context (all on the CPU here)."""
    return split_data(data, len(ctx_list), batch_axis, even_split)
