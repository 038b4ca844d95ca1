"""``ImageDetIter``: MXNet's detection iterator on ImageIter (any URL, threaded decode).

Each record's packed label is a flat detection label ``[A, B, header..., objects...]``
(see ``det_labels``).  The constructor scans the data once for the largest object
count (MXNet's ``_estimate_label_shape``) unless ``label_shape`` is given; batches carry
labels of shape ``(batch, max_objects, B)`` with the rows after a sample's objects set
to -1 (spec §3.6).  Differences from MXNet, all about bad data: a malformed label (width
against the header, a box outside [0, 1], NaN, an object width unlike the others) raises
DetLabelError naming the file and record, instead of crashing the scan or being skipped
silently at batch time; ``on_error='skip'`` skips such samples (MXNet's behaviour) and
lists them in ``bad_labels``.  Samples with no valid object are skipped (as MXNet) and
listed in ``num_empty``/``empty``.
"""
from __future__ import annotations

import inspect
import logging
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cloudrec.errors import ConfigError, LabelError
from cloudrec.image.create import IMAGENET_MEAN, IMAGENET_STD
from cloudrec.image.det_augmenters import CreateDetAugmenter, apply_det
from cloudrec.image.det_labels import DetLabelError, EmptyDetLabelError, parse_det_label
from cloudrec.iterators.image_iter import ImageIter
from cloudrec.iterators.names import CLOUDREC_NAMES
from cloudrec.image.draw import draw_boxes
from cloudrec.io.base import DataDesc

__all__ = ["ImageDetIter"]

log = logging.getLogger(__name__)

#: ImageIter keywords that are cloudrec's own (not CreateDetAugmenter arguments).
# ImageIter's own (keyword-only) options pass through unchanged: one list, read off its signature
_ITER_KWARGS = tuple(n for n, p in inspect.signature(ImageIter.__init__).parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY)
_DET_AUG_ARGS = tuple(inspect.signature(CreateDetAugmenter).parameters)[1:]


class ImageDetIter(ImageIter):
    """MXNet's ImageDetIter: images with ``(batch, max_objects, B)`` detection labels.

    Arguments as MXNet (``kwargs`` go to CreateDetAugmenter when ``aug_list`` is None),
    plus every cloudrec keyword of ImageIter (``seed``, ``num_threads``, ``on_error``,
    ``max_pixels``, ``truncated``, ``part_mode``, ``storage_options``, ``cache``,
    ``fetch_options``, ...) and ``label_shape=(n, B)``
    to skip the label scan over the whole data set (useful for big remote data).
    """

    def __init__(self, batch_size: int, data_shape: Sequence[int],
                 path_imgrec: Optional[str] = None, path_imglist: Optional[str] = None,
                 path_root: Optional[str] = None, path_imgidx: Optional[str] = None,
                 shuffle: bool = False, part_index: int = 0, num_parts: int = 1,
                 aug_list: Optional[List[Any]] = None, imglist: Optional[list] = None,
                 data_name: str = "data", label_name: str = "label",
                 last_batch_handle: str = "pad", label_shape: Optional[Tuple[int, int]] = None,
                 **kwargs: Any) -> None:
        iter_kwargs = {k: kwargs.pop(k) for k in _ITER_KWARGS + CLOUDREC_NAMES if k in kwargs}
        self._lock = threading.Lock()
        self._empty: Dict[Any, str] = {}
        self._bad: Dict[Any, str] = {}
        super().__init__(batch_size=batch_size, data_shape=data_shape, label_width=1,
                         path_imgrec=path_imgrec, path_imglist=path_imglist,
                         path_root=path_root, path_imgidx=path_imgidx, shuffle=shuffle,
                         part_index=part_index, num_parts=num_parts, aug_list=[],
                         imglist=imglist, data_name=data_name, label_name=label_name,
                         dtype="float32", last_batch_handle=last_batch_handle, **iter_kwargs)
        unknown = sorted(set(kwargs) - set(_DET_AUG_ARGS))
        if unknown:
            raise ConfigError(f"ImageDetIter got unknown keyword argument(s) {unknown}; "
                              f"augmenter arguments are {', '.join(_DET_AUG_ARGS)}")
        self._det_aug_kwargs = dict(kwargs) if aug_list is None else None
        self.auglist = CreateDetAugmenter(self.data_shape, **kwargs) if aug_list is None \
            else aug_list
        if label_shape is None:
            label_shape = self._estimate_label_shape()
        else:
            label_shape = (int(label_shape[0]), int(label_shape[1]))
            if len(label_shape) != 2 or label_shape[1] < 5 or label_shape[0] < 1:
                raise ValueError(f"label_shape must be (objects >= 1, width >= 5), "
                                 f"got {label_shape}")
        self.label_shape = label_shape
        self.provide_label = [DataDesc(label_name, (self.batch_size,) + label_shape)]

    # ------------------------------------------------------------------------ labels
    def _source_url(self) -> Optional[str]:
        return self.path_imgrec or getattr(self, "_list_url", None)

    def _parse_label(self, label: Any, key: Any = None) -> np.ndarray:
        """The ``(n, B)`` valid objects of a raw label; DetLabelError names the record."""
        if key is None:
            key = getattr(self._local, "key", None)
        return parse_det_label(label, url=self._source_url(), key=key)

    def _check_valid_label(self, label: np.ndarray) -> None:
        """After augmentation at least one object must remain (RuntimeError, as MXNet)."""
        if label.ndim != 2 or label.shape[1] < 5:
            raise RuntimeError(f"Label with shape (1+, 5+) required, {label.shape} received.")
        valid = (label[:, 0] >= 0) & (label[:, 3] > label[:, 1]) & (label[:, 4] > label[:, 2])
        if not valid.any():
            raise RuntimeError("Invalid label occurs.")

    @property
    def num_empty(self) -> int:
        """How many distinct records were skipped for having no valid object."""
        return len(self._empty)

    @property
    def empty(self) -> List[str]:
        """Why each of those records was skipped (first 1000)."""
        return list(self._empty.values())

    @property
    def bad_labels(self) -> List[str]:
        """With ``on_error='skip'``: the malformed labels that were skipped (first 1000)."""
        return list(self._bad.values())

    def _note_empty(self, msg: str, key: Any = None) -> None:
        key = getattr(self._local, "key", None) if key is None else key
        with self._lock:
            if key not in self._empty and len(self._empty) < 1000:
                self._empty[key] = msg
        log.debug("skipping a sample without valid objects: %s", msg)

    def _bad_label(self, err: DetLabelError) -> None:
        """Raise a malformed label, or (``on_error='skip'``, MXNet's behaviour) log and skip."""
        if self.on_error != "skip":
            raise err
        with self._lock:
            if err.key not in self._bad and len(self._bad) < 1000:
                self._bad[err.key] = str(err)
        log.warning("skipping a sample with a malformed detection label: %s", err)

    def _objects(self, label: Any, key: Any = None) -> Optional[np.ndarray]:
        """Parsed objects, or None when the sample is to be skipped (empty or skipped bad)."""
        try:
            obj = self._parse_label(label, key)
        except EmptyDetLabelError as e:
            self._note_empty(str(e), key)
            return None
        except DetLabelError as e:
            self._bad_label(e)
            return None
        width = getattr(self, "label_shape", (None, None))[1]
        if width is not None and obj.shape[1] != width:
            self._bad_label(DetLabelError(
                f"object width {obj.shape[1]} differs from the label_shape width {width}",
                self._source_url(), getattr(self._local, "key", None) if key is None else key))
            return None
        return obj

    def _estimate_label_shape(self) -> Tuple[int, int]:
        """One pass over the partition: (largest object count, object width)."""
        max_count, width, first = 0, None, None
        self.reset()
        try:
            while True:
                item = self._next_item()
                try:
                    obj = self._parse_label(item.label, item.key)
                except EmptyDetLabelError:
                    continue  # skipped (and counted) when batches are made
                except DetLabelError as e:
                    self._bad_label(e)
                    continue
                if width is None:
                    width, first = obj.shape[1], item.key
                elif obj.shape[1] != width:
                    self._bad_label(DetLabelError(
                        f"object width {obj.shape[1]} differs from the width {width} of "
                        f"record key {first!r}", self._source_url(), item.key))
                    continue
                max_count = max(max_count, obj.shape[0])
        except StopIteration:
            pass
        self.reset()
        if width is None:
            raise LabelError(f"no record of {self._source_url()} has a valid detection label")
        return (max_count, width)

    # ------------------------------------------------------------------------ per sample
    def augmentation_transform(self, data: np.ndarray, label: np.ndarray
                               ) -> Tuple[np.ndarray, np.ndarray]:
        """Apply the detection augmenters in order with this sample's Generator."""
        rng = self.sample_rng
        for aug in self.auglist:
            data, label = apply_det(aug, data, label, rng)
        return data, label

    def process_sample(self, label: Any, s: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Decode, parse the label, augment, check; None skips the sample (as MXNet)."""
        data = self.imdecode(s)
        if not self._is_valid_image(data):
            return None
        objects = self._objects(label)
        if objects is None:
            return None
        data, objects = self.augmentation_transform(data, objects)
        try:
            self._check_valid_label(objects)
        except RuntimeError as e:
            self._note_empty(f"{getattr(self._local, 'where', '')}: {e}")
            return None
        return self.postprocess_data(data), objects

    def write_sample(self, batch_data: np.ndarray, batch_label: np.ndarray, i: int,
                     data: np.ndarray, label: Any, where: str = "") -> None:
        """Slot ``i``: the image, the objects in rows ``0..n-1`` and -1 in the rest."""
        self._check_sample_shape(batch_data, data, where)
        n, width = label.shape
        max_n, max_w = batch_label.shape[1:]
        if width != max_w:
            raise LabelError(f"sample {where} has object width {width}, label_shape "
                             f"{self.label_shape} wants {max_w}")
        if n > max_n:
            raise LabelError(f"sample {where} has {n} objects, label_shape {self.label_shape} "
                             f"holds {max_n}: reshape() to a larger object count")
        batch_data[i] = data
        batch_label[i, :n] = label
        batch_label[i, n:] = -1

    # ------------------------------------------------------------------------ shapes
    def reshape(self, data_shape: Optional[Sequence[int]] = None,
                label_shape: Optional[Sequence[int]] = None) -> None:
        """New data and/or label shape; the object count may grow, never shrink.

        When the augmenters were built from keyword arguments, a new data_shape rebuilds
        them so the final resize matches (MXNet keeps the old list and then fails).
        """
        if data_shape is not None:
            data_shape = tuple(int(x) for x in data_shape)
            self.check_data_shape(data_shape)
            self.provide_data = [DataDesc(self.provide_data[0][0],
                                          (self.batch_size,) + data_shape)]
            self.data_shape = data_shape
            if self._det_aug_kwargs is not None:
                self.auglist = CreateDetAugmenter(data_shape, **self._det_aug_kwargs)
        if label_shape is not None:
            label_shape = tuple(int(x) for x in label_shape)
            self.check_label_shape(label_shape)
            self.provide_label = [DataDesc(self.provide_label[0][0],
                                           (self.batch_size,) + label_shape)]
            self.label_shape = label_shape

    def check_label_shape(self, label_shape: Sequence[int]) -> None:
        """ValueError unless ``(objects >= current, same object width)``."""
        if not len(label_shape) == 2:
            raise ValueError("label_shape should have length 2")
        if label_shape[0] < self.label_shape[0]:
            raise ValueError("Attempts to reduce label count from %d to %d, not allowed."
                             % (self.label_shape[0], label_shape[0]))
        if label_shape[1] != self.provide_label[0][1][2]:
            raise ValueError("label_shape object width inconsistent: %d vs %d."
                             % (self.provide_label[0][1][2], label_shape[1]))

    def sync_label_shape(self, it: "ImageDetIter", verbose: bool = False) -> "ImageDetIter":
        """Give this iterator and ``it`` the larger of their object counts; returns ``it``."""
        assert isinstance(it, ImageDetIter), "Synchronize with invalid iterator."
        mine, theirs = self.label_shape, it.label_shape
        assert mine[1] == theirs[1], "object width mismatch."
        max_count = max(mine[0], theirs[0])
        if max_count > mine[0]:
            self.reshape(None, (max_count, mine[1]))
        if max_count > theirs[0]:
            it.reshape(None, (max_count, theirs[1]))
        if verbose and max_count > min(mine[0], theirs[0]):
            log.info("Resized label_shape to (%d, %d).", max_count, mine[1])
        return it

    # ------------------------------------------------------------------------ debugging
    def draw_next(self, color: Optional[Sequence[int]] = None, thickness: int = 2,
                  mean: Any = None, std: Any = None, clip: bool = True,
                  waitKey: Optional[int] = None, window_name: str = "draw_next",
                  id2labels: Optional[Dict[int, str]] = None) -> Iterator[np.ndarray]:
        """Yield the next images (augmented, BGR uint8 HWC as MXNet) with their boxes drawn.

        ``mean``/``std`` (True = ImageNet) undo a normalisation for display; ``color``
        is RGB (None = random per box); with ``waitKey`` each image is also shown.
        """
        if std is True:
            std = np.array(IMAGENET_STD)
        if mean is True:
            mean = np.array(IMAGENET_MEAN)
        colour_rng = np.random.default_rng([self.seed, 0xD4A])
        n = 0
        while True:
            try:
                item = self._next_item()
            except StopIteration:
                return
            self._local.where, self._local.key = item.where, item.key
            self._local.rng = np.random.default_rng([self.seed, 0xD4A, n])
            n += 1
            try:
                data = self.imdecode(self._payload(item))
                try:
                    self.check_valid_image(data)
                except RuntimeError as e:
                    log.debug("Invalid image, skipping: %s", e)
                    continue
                label = self._objects(item.label, item.key)
                if label is None:
                    continue
                data, label = self.augmentation_transform(data, label)
            finally:
                self._local.rng = None
            image = np.array(data, dtype=np.float32)
            if std is not None:
                image *= np.asarray(std, np.float32)
            if mean is not None:
                image += np.asarray(mean, np.float32)
            image = image[:, :, ::-1]  # RGB -> BGR for OpenCV
            if clip:
                image = np.clip(image, 0, 255)
            image = np.ascontiguousarray(image.astype(np.uint8))
            bgr = tuple(color[::-1]) if color else None
            draw_boxes(image, label, bgr, thickness, id2labels, colour_rng)
            if waitKey is not None:
                cv2.imshow(window_name, image)
                cv2.waitKey(waitKey)
            yield image
