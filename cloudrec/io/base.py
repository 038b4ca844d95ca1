"""MXNet's ``mx.io`` base classes: DataDesc, DataBatch and DataIter.

They keep MXNet's names, arguments and methods so that a custom iterator
written for MXNet (the third way to load images) ports by changing an import.
Arrays are numpy (or anything with ``.shape``); nothing here does IO.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["DataDesc", "DataBatch", "DataIter"]


class DataDesc(namedtuple("DataDesc", ["name", "shape"])):
    """Name, shape, dtype and layout of one input or label of a batch.

    Compares and unpacks like the 2-tuple ``(name, shape)``, as in MXNet;
    ``dtype`` and ``layout`` ride along as attributes.
    """

    def __new__(cls, name: str, shape: Sequence[int], dtype: Any = np.float32,
                layout: Optional[str] = "NCHW") -> "DataDesc":
        ret = super().__new__(cls, name, tuple(shape))
        ret.dtype = dtype
        ret.layout = layout
        return ret

    def __repr__(self) -> str:
        return "DataDesc[%s,%s,%s,%s]" % (self.name, self.shape, self.dtype, self.layout)

    def __getnewargs__(self):  # keep dtype/layout through pickle and copy
        return (self.name, self.shape, self.dtype, self.layout)

    @staticmethod
    def get_batch_axis(layout: Optional[str]) -> int:
        """Position of 'N' in ``layout`` (0 when the layout is unknown)."""
        if layout is None:
            return 0
        return layout.find("N")

    @staticmethod
    def get_list(shapes: Iterable[Tuple[str, Sequence[int]]],
                 types: Optional[Iterable[Tuple[str, Any]]]) -> List["DataDesc"]:
        """DataDescs from ``[(name, shape)]`` and optional ``[(name, dtype)]``."""
        if types is not None:
            type_dict = dict(types)
            return [DataDesc(x[0], x[1], type_dict[x[0]]) for x in shapes]
        return [DataDesc(x[0], x[1]) for x in shapes]


class DataBatch:
    """One batch: lists of data and label arrays, plus ``pad`` and ``index``.

    ``pad`` is how many trailing samples are filler (or, for ImageIter's
    roll_over, MXNet's own meaning; see spec §3.5).
    """

    def __init__(self, data: Optional[Sequence[Any]], label: Optional[Sequence[Any]] = None,
                 pad: Optional[int] = None, index: Any = None, bucket_key: Any = None,
                 provide_data: Optional[List[Any]] = None,
                 provide_label: Optional[List[Any]] = None) -> None:
        if data is not None:
            assert isinstance(data, (list, tuple)), "Data must be list of NDArrays"
        if label is not None:
            assert isinstance(label, (list, tuple)), "Label must be list of NDArrays"
        self.data = data
        self.label = label
        self.pad = pad
        self.index = index
        self.bucket_key = bucket_key
        self.provide_data = provide_data
        self.provide_label = provide_label

    def __str__(self) -> str:
        data_shapes = [d.shape for d in self.data]
        label_shapes = [l.shape for l in self.label] if self.label else None
        return "{}: data shapes: {} label shapes: {}".format(
            self.__class__.__name__, data_shapes, label_shapes)

    __repr__ = __str__


class DataIter:
    """Base of every iterator: subclass and implement ``iter_next`` and the getters.

    ``next()`` asks ``iter_next()`` whether a batch is ready, then builds a
    DataBatch from ``getdata/getlabel/getpad/getindex``, as MXNet does.
    """

    def __init__(self, batch_size: int = 0) -> None:
        self.batch_size = batch_size

    def __iter__(self) -> "DataIter":
        return self

    def reset(self) -> None:
        """Rewind to the start of the next epoch."""
        pass

    def next(self) -> DataBatch:
        """The next batch, or StopIteration at the end of the epoch."""
        if self.iter_next():
            return DataBatch(data=self.getdata(), label=self.getlabel(),
                             pad=self.getpad(), index=self.getindex())
        raise StopIteration

    def __next__(self) -> DataBatch:
        return self.next()

    def iter_next(self) -> bool:
        """Move to the next batch; False at the end of the epoch."""
        pass

    def getdata(self) -> Optional[List[Any]]:
        """Data arrays of the current batch."""
        pass

    def getlabel(self) -> Optional[List[Any]]:
        """Label arrays of the current batch."""
        pass

    def getindex(self) -> Any:
        """Indices of the current batch's samples (None if unknown)."""
        return None

    def getpad(self) -> Optional[int]:
        """Number of filler samples in the current batch."""
        pass
